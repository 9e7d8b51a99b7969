//! HTTPS served by `maas-api` itself, from a certificate `maas tls self-signed` wrote: HTTP/2 by
//! ALPN, the certificate valid for every `--host`, and plain HTTP redirected.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;

use maas_tests::process::free_port;
use maas_tests::{TestDatabase, binary, eventually, platform_command};
use reqwest::StatusCode;

#[tokio::test]
async fn the_api_serves_https_with_http2_for_every_host_of_its_self_signed_certificate() {
    let dir = std::env::temp_dir().join(format!("maas-tls-{}", uuid::Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let made = Command::new(binary("maas"))
        .args([
            "tls",
            "self-signed",
            "--host",
            "127.0.0.1",
            "--host",
            "gpu.local",
            "--out-dir",
        ])
        .arg(dir.as_path())
        .output()
        .unwrap();
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let cert_path = dir.as_path().join("cert.pem");
    let key_path = dir.as_path().join("key.pem");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode = std::fs::metadata(&key_path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the key is readable by its owner only");
    }
    // A second run does not overwrite them.
    let again = Command::new(binary("maas"))
        .args(["tls", "self-signed", "--host", "127.0.0.1", "--out-dir"])
        .arg(dir.as_path())
        .output()
        .unwrap();
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));

    let db = TestDatabase::migrated().await;
    let (port, plain) = (free_port(), free_port());
    let prefix = format!("test:{}:", uuid::Uuid::now_v7().simple());
    let mut api = platform_command("maas-api", &db.url, &prefix)
        .env("MAAS__SERVER__PORT", port.to_string())
        .env("MAAS__SERVER__TLS_CERT_FILE", &cert_path)
        .env("MAAS__SERVER__TLS_KEY_FILE", &key_path)
        .env("MAAS__SERVER__HTTP_REDIRECT_PORT", plain.to_string())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    let cert = reqwest::Certificate::from_pem(&std::fs::read(&cert_path).unwrap()).unwrap();
    let at: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = reqwest::Client::builder()
        .add_root_certificate(cert)
        .resolve("gpu.local", at)
        .resolve("other.local", at)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let up = eventually(Duration::from_secs(20), || async {
        let resp = client
            .get(format!("https://127.0.0.1:{port}/health"))
            .send()
            .await
            .ok()?;
        Some(resp)
    })
    .await
    .expect("maas-api never answered over HTTPS");
    assert_eq!(up.status(), StatusCode::OK);
    assert_eq!(up.version(), reqwest::Version::HTTP_2, "ALPN chose HTTP/2");

    let by_name = client
        .get(format!("https://gpu.local:{port}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(by_name.status(), StatusCode::OK);
    let unnamed = client
        .get(format!("https://other.local:{port}/health"))
        .send()
        .await;
    assert!(
        unnamed.is_err(),
        "a name outside the certificate is refused: {unnamed:?}"
    );
    let cleartext = client
        .get(format!("http://127.0.0.1:{port}/health"))
        .send()
        .await;
    assert!(
        cleartext.is_err()
            || cleartext
                .as_ref()
                .is_ok_and(|r| r.status() != StatusCode::OK),
        "the TLS port speaks no plain HTTP: {cleartext:?}"
    );

    // The plain port sends everything to HTTPS, path and query kept.
    let redirected = client
        .get(format!("http://127.0.0.1:{plain}/api/v1/me?fields=all"))
        .send()
        .await
        .unwrap();
    assert_eq!(redirected.status(), StatusCode::PERMANENT_REDIRECT);
    assert_eq!(
        redirected.headers()["location"],
        format!("https://127.0.0.1:{port}/api/v1/me?fields=all").as_str()
    );
    api.kill().unwrap();
    api.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}
