//! The web admin console: a static page (`daemons/web/console/`, plain
//! HTML, CSS and one ES module, no build step) served at the root of the
//! admin port, over the admin API with the admin token.
//!
//! It is served the way login_server serves the web client (ETags,
//! `no-cache`, `nosniff`, no framing), with a stricter
//! Content-Security-Policy: it talks only to its own origin.

use crate::login::WebClient;
use crate::runtime::{Request, Response};

/// The console's files, by path below the root (`""` is `/`).
const FILES: &[(&str, &[u8])] = &[
    ("index.html", include_bytes!("../../web/console/index.html")),
    (
        "console.css",
        include_bytes!("../../web/console/console.css"),
    ),
    ("console.js", include_bytes!("../../web/console/console.js")),
];

/// Scripts, styles and requests from the console's own origin only;
/// nothing may frame it.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// The embedded console.
#[derive(Debug, Clone)]
pub struct Console {
    files: WebClient,
}

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}

impl Console {
    /// The console's files with their types and ETags.
    #[must_use]
    pub fn new() -> Self {
        Self {
            files: WebClient::of_files(FILES.iter().map(|(p, b)| ((*p).to_owned(), *b)), CSP),
        }
    }

    /// The answer for `request` if its path is one of the console's files
    /// (`/` is `index.html`); `None` for any other path.
    #[must_use]
    pub fn respond(&self, request: &Request) -> Option<Response> {
        self.files.respond(request)
    }

    /// The served paths, sorted.
    #[must_use]
    pub fn paths(&self) -> Vec<&str> {
        self.files.paths()
    }
}
