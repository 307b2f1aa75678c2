//! `fetch` fails fast and clearly without a network. Only loopback addresses are contacted.

mod common;

use std::net::TcpListener;
use std::time::{Duration, Instant};

use earlyexit_data::fetch::md5_hex;
use earlyexit_data::*;

#[test]
fn md5_test_vectors() {
    // RFC 1321 appendix A.5.
    assert_eq!(md5_hex(b""), "d41d8cd98f00b204e9800998ecf8427e");
    assert_eq!(md5_hex(b"abc"), "900150983cd24fb0d6963f7d28e17f72");
    assert_eq!(md5_hex(b"message digest"), "f96b697d7cb7938d525a2f31aaf161d0");
    assert_eq!(
        md5_hex(b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"),
        "57edf4a22be3c955ac49da2e2107b67a"
    );
    // A real file, against coreutils md5sum: the MNIST copy the repository ships, so that this runs
    // on a bare clone.
    let f = std::fs::read(repo_data_dir().join("mnist/t10k-labels-idx1-ubyte.gz")).unwrap();
    assert_eq!(md5_hex(&f), "3ce43ad61af0148d0439319f5708bb29");
}

fn no_curl() -> bool {
    std::process::Command::new("curl").arg("--version").output().is_err()
}

/// On a machine without curl the network tests check this instead: every fetch fails at once
/// with an error that names curl.
fn check_missing_curl_is_named() {
    let t = common::tmp();
    let e = fetch(DatasetKind::Svhn, t.path(), &FetchOptions::default()).unwrap_err();
    assert!(e.to_string().contains("curl"), "{e}");
}

#[test]
fn fetch_without_network_fails_clearly() {
    if no_curl() {
        return check_missing_curl_is_named();
    }
    // A port nobody listens on: connection refused at once.
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let t = common::tmp();
    let opts = FetchOptions {
        base_url: Some(format!("http://127.0.0.1:{port}/")),
        connect_timeout: Duration::from_secs(2),
        max_time: Duration::from_secs(5),
        ..FetchOptions::default()
    };
    let t0 = Instant::now();
    let e = fetch(DatasetKind::Mnist, t.path(), &opts).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(10));
    let msg = e.to_string();
    assert!(matches!(e, Error::Fetch { .. }), "{e:?}");
    assert!(msg.contains("fetch mnist") && msg.contains("no network"), "{msg}");
    assert!(!t.path().join("mnist/train-images-idx3-ubyte.gz").exists());
}

#[test]
fn fetch_never_hangs_on_a_silent_server() {
    if no_curl() {
        return check_missing_curl_is_named();
    }
    // Accepts connections but never answers: the time limit ends the download.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let t = common::tmp();
    let opts = FetchOptions {
        base_url: Some(format!("http://127.0.0.1:{port}")),
        connect_timeout: Duration::from_secs(1),
        max_time: Duration::from_secs(2),
        ..FetchOptions::default()
    };
    let t0 = Instant::now();
    let e = fetch(DatasetKind::Cifar10, t.path(), &opts).unwrap_err();
    assert!(t0.elapsed() < Duration::from_secs(8), "{:?}", t0.elapsed());
    assert!(e.to_string().contains("timed out"), "{e}");
    drop(l);
}

#[test]
fn fetch_checks_sums_and_refuses_what_cannot_be_fetched() {
    // A local "server" answering every request with the same wrong body: the sum check rejects it.
    if no_curl() {
        return check_missing_curl_is_named();
    }
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let body = b"not the dataset";
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = s.write_all(body);
        }
    });
    let t = common::tmp();
    let opts = FetchOptions {
        base_url: Some(format!("http://127.0.0.1:{port}")),
        connect_timeout: Duration::from_secs(2),
        max_time: Duration::from_secs(5),
        ..FetchOptions::default()
    };
    let e = fetch(DatasetKind::Svhn, t.path(), &opts).unwrap_err();
    server.join().unwrap();
    assert!(
        e.to_string().contains("sha256 mismatch") || e.to_string().contains("expected e26dedcc"),
        "{e}"
    );
    assert!(!t.path().join("svhn/train_32x32.mat").exists());
    assert!(!t.path().join("svhn/train_32x32.mat.part").exists());
    for k in [DatasetKind::Digits, DatasetKind::ImageFolder] {
        let e = fetch(k, t.path(), &opts).unwrap_err();
        assert!(matches!(e, Error::Fetch { .. }), "{e:?}");
    }
}
