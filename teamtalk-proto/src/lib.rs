#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod attach;
mod codec;
pub mod command;
mod error;
pub mod fields;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod header;
pub mod pb;
mod pdu;

pub use attach::{Attach, AttachError, AttachKind};
pub use codec::{DEFAULT_MAX_PDU_LEN, PduCodec};
pub use command::{Command, Message};
pub use error::{BodyError, FrameError};
pub use fields::Attached;
pub use header::{CommandKey, Header, PDU_VERSION};
pub use pdu::Pdu;

/// Our `.proto` files as text, by file name, in dependency order
/// (`IM.BaseDefine.proto` first): what the types in [`pb`] are generated
/// from, for peers that read the schema at run time (the web client parses
/// them with protobuf.js, served by login_server).
pub const PROTO_FILES: [(&str, &str); 10] = [
    (
        "IM.BaseDefine.proto",
        include_str!("../proto/IM.BaseDefine.proto"),
    ),
    ("IM.Login.proto", include_str!("../proto/IM.Login.proto")),
    ("IM.Buddy.proto", include_str!("../proto/IM.Buddy.proto")),
    (
        "IM.Message.proto",
        include_str!("../proto/IM.Message.proto"),
    ),
    ("IM.Group.proto", include_str!("../proto/IM.Group.proto")),
    ("IM.File.proto", include_str!("../proto/IM.File.proto")),
    (
        "IM.SwitchService.proto",
        include_str!("../proto/IM.SwitchService.proto"),
    ),
    ("IM.Other.proto", include_str!("../proto/IM.Other.proto")),
    ("IM.Server.proto", include_str!("../proto/IM.Server.proto")),
    ("IM.Ext.proto", include_str!("../proto/IM.Ext.proto")),
];

#[cfg(test)]
mod proto_files_tests {
    /// Every file in `proto/` is listed, so a new one cannot be forgotten.
    #[test]
    fn every_proto_file_is_listed() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("proto");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".proto"))
            .collect();
        on_disk.sort();
        let mut listed: Vec<String> = super::PROTO_FILES
            .iter()
            .map(|(n, _)| (*n).to_owned())
            .collect();
        listed.sort();
        assert_eq!(on_disk, listed);
        for (name, text) in super::PROTO_FILES {
            assert!(text.contains("syntax = \"proto2\""), "{name}");
        }
    }
}
