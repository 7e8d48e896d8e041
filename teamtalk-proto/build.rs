//! Compiles `proto/IM.*.proto` into prost types at build time.
//!
//! protox parses the files in pure Rust, so building this crate needs no
//! system `protoc`. The generated modules are nested by package
//! (`im::base_define`, `im::login`, ...) through one include file that
//! `src/pb.rs` pulls in.

use std::path::PathBuf;

/// The nine TeamTalk packages, one file each, and our extensions (`IM.Ext`).
const PROTOS: [&str; 10] = [
    "IM.BaseDefine.proto",
    "IM.Login.proto",
    "IM.Buddy.proto",
    "IM.Message.proto",
    "IM.Group.proto",
    "IM.File.proto",
    "IM.SwitchService.proto",
    "IM.Other.proto",
    "IM.Server.proto",
    "IM.Ext.proto",
];

fn main() {
    let dir = PathBuf::from("proto");
    println!("cargo:rerun-if-changed=proto");
    for file in PROTOS {
        println!("cargo:rerun-if-changed=proto/{file}");
    }

    let files: Vec<PathBuf> = PROTOS.iter().map(|f| dir.join(f)).collect();
    let fds = protox::compile(&files, [&dir])
        .unwrap_or_else(|e| panic!("proto/*.proto does not compile: {e}"));

    prost_build::Config::new()
        // `bytes` fields (msg_data, attach_data, ...) become `bytes::Bytes`,
        // so decoding them from a received PDU does not copy.
        .bytes(["."])
        // `prost::Name` lets tests check the command table's message names.
        .enable_type_names()
        .include_file("pb.rs")
        .compile_fds(fds)
        .unwrap_or_else(|e| panic!("prost-build failed to write the generated code: {e}"));
}
