//! `Content-Type` by file extension, for serving stored files.

/// The content type for a file name or path, by its extension
/// (case-insensitive): images (jpg/jpeg, png, gif, webp, bmp, ico, avif,
/// heic, svg), audio (amr, mp3, m4a, aac, wav, ogg/oga, opus, spx: the
/// formats TeamTalk clients record or play), json, html/htm, css, js/mjs,
/// wasm, txt; `application/octet-stream` otherwise. Text types carry
/// `charset=utf-8`.
#[must_use]
pub fn content_type_for(name: &str) -> &'static str {
    let file = name.rsplit(['/', '\\']).next().unwrap_or(name);
    let Some((stem, ext)) = file.rsplit_once('.') else {
        return OCTET_STREAM;
    };
    if stem.is_empty() {
        // A dot file (".png") has no extension.
        return OCTET_STREAM;
    }
    match ext.to_ascii_lowercase().as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "bmp" => "image/bmp",
        "ico" => "image/x-icon",
        "avif" => "image/avif",
        "heic" => "image/heic",
        "svg" => "image/svg+xml",
        "amr" => "audio/amr",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "aac" => "audio/aac",
        "wav" => "audio/wav",
        "ogg" | "oga" | "spx" => "audio/ogg",
        "opus" => "audio/opus",
        "json" => "application/json",
        "html" | "htm" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "txt" => "text/plain; charset=utf-8",
        _ => OCTET_STREAM,
    }
}

/// The type of unknown content.
pub const OCTET_STREAM: &str = "application/octet-stream";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_extensions_map_and_others_are_octet_stream() {
        let cases = [
            ("a.jpg", "image/jpeg"),
            ("A.JPEG", "image/jpeg"),
            ("dir/x.png", "image/png"),
            ("x.gif", "image/gif"),
            ("x.webp", "image/webp"),
            ("x.bmp", "image/bmp"),
            ("icon.svg", "image/svg+xml"),
            ("favicon.ico", "image/x-icon"),
            ("a.AVIF", "image/avif"),
            ("voice.amr", "audio/amr"),
            ("song.mp3", "audio/mpeg"),
            ("memo.m4a", "audio/mp4"),
            ("a.aac", "audio/aac"),
            ("a.wav", "audio/wav"),
            ("a.ogg", "audio/ogg"),
            ("a.spx", "audio/ogg"),
            ("a.opus", "audio/opus"),
            ("data.json", "application/json"),
            ("index.html", "text/html; charset=utf-8"),
            ("index.htm", "text/html; charset=utf-8"),
            ("site.css", "text/css; charset=utf-8"),
            ("app.js", "text/javascript; charset=utf-8"),
            ("mod.mjs", "text/javascript; charset=utf-8"),
            ("app.wasm", "application/wasm"),
            ("notes.txt", "text/plain; charset=utf-8"),
            ("archive.tar.gz", OCTET_STREAM),
            ("noext", OCTET_STREAM),
            (".png", OCTET_STREAM),
            ("dir.png/file", OCTET_STREAM),
            ("win\\path\\p.PNG", "image/png"),
            ("", OCTET_STREAM),
        ];
        for (name, ct) in cases {
            assert_eq!(content_type_for(name), ct, "{name}");
        }
    }
}
