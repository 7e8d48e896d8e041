//! The sample configurations shipped in `deploy/` are read by the daemons
//! they are for, as they are (paths to the secret and the data directory
//! pointed at temporary files).

use std::path::Path;

use daemons::conf::Conf;

fn load(file: &Path, dir: &Path) -> Conf {
    let secret = dir.join("cluster.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef\n").unwrap();
    let app_key = dir.join("http_msg_app.key");
    std::fs::write(&app_key, "00112233445566778899aabbccddeeff\n").unwrap();
    let text = std::fs::read_to_string(file)
        .unwrap()
        .replace(
            "/etc/teamtalk/cluster.secret",
            &secret.display().to_string(),
        )
        .replace("/run/secrets/cluster_secret", &secret.display().to_string())
        .replace(
            "/run/secrets/http_msg_app_key",
            &app_key.display().to_string(),
        )
        .replace("/var/lib/teamtalk", &dir.join("data").display().to_string());
    Conf::parse_str(&text, &file.display().to_string()).unwrap()
}

#[test]
fn every_sample_conf_is_accepted_by_its_daemon() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let dir = tempfile::tempdir().unwrap();
    let mut checked = 0;
    for folder in ["conf", "compose/conf"] {
        for entry in std::fs::read_dir(root.join(folder)).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            let conf = load(&path, dir.path());
            let result = if name.starts_with("msgserver") {
                daemons::msg::MsgConfig::from_conf(&conf)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else if name.starts_with("loginserver") {
                daemons::login::LoginConfig::from_conf(&conf)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else if name.starts_with("routeserver") {
                daemons::route::RouteConfig::from_conf(&conf)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else if name.starts_with("dbproxyserver") {
                daemons::db_proxy::config_from_conf(&conf)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else if name.starts_with("msfs") {
                daemons::msfs::MsfsConfig::from_conf(&conf)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else if name.starts_with("pushserver") {
                daemons::push::PushConfig::from_conf(&conf)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else if name.starts_with("httpmsgserver") {
                daemons::http_msg::HttpMsgConfig::from_conf(&conf)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else if name.starts_with("fileserver") {
                daemons::file::FileConfig::from_conf(&conf)
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            } else {
                panic!("a sample conf no test reads: {name}");
            };
            if let Err(e) = result {
                // Compose files name other containers, which do not resolve here.
                assert!(
                    folder == "compose/conf" && e.contains("cannot resolve"),
                    "{}: {e}",
                    path.display()
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, 8 + 9);
}
