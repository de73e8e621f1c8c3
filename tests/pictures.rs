//! Pictures on one node: attached with `capsule post --attach`, stripped of
//! metadata (read back by exiftool, an independent reader), served with
//! their headers, refused when they are not pictures, and checked by
//! `verify --store`.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{Up, capsule, capsule_ok, get_with, init, jpeg, tools_present};

/// The attachments of `author`'s entry `seq`, from the node's API.
pub(crate) fn attachments(node: &Up, author: &str, seq: u64) -> Vec<serde_json::Value> {
    let (status, body) = node.text(&format!(
        "/api/v1/authors/{author}/entries?from={seq}&limit=1"
    ));
    assert_eq!(status, 200, "{body}");
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    page["entries"][0]["record"]["attachments"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// A header of a raw response head, lower-cased name.
fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// exiftool's JSON (`-G`: tags by group) of `file`.
fn exiftool(file: &Path) -> serde_json::Value {
    let out = std::process::Command::new("exiftool")
        .args(["-j", "-G", "-n"])
        .arg(file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()[0].clone()
}

#[test]
fn a_phone_photo_loses_its_location_stands_upright_and_is_served_as_a_picture() {
    let dir = tempfile::tempdir().unwrap();
    let author = init(dir.path());
    // Stored sideways, 400 wide and 200 high, with "turn 90° clockwise"
    // and a GPS position, as a phone writes them.
    let photo = dir.path().join("photo.jpg");
    std::fs::write(
        &photo,
        capsule::picture::testdata::with_exif(&jpeg(400, 200), 6),
    )
    .unwrap();
    let out = capsule_ok(
        dir.path(),
        &[
            "post",
            "the harbour",
            "--attach",
            photo.to_str().unwrap(),
            "--alt",
            "boats at dawn",
        ],
    );
    assert!(out.contains("published entry 1"), "{out}");
    let node = Up::start(dir.path());
    let attached = attachments(&node, &author, 1);
    assert_eq!(attached.len(), 1);
    let picture = &attached[0];
    assert_eq!(
        (picture["width"].as_u64(), picture["height"].as_u64()),
        (Some(200), Some(400))
    );
    assert_eq!(picture["alt"], "boats at dawn");
    let hash = picture["hash"].as_str().unwrap();

    let path = format!("/api/v1/blobs/{hash}");
    let (status, head, body) = get_with(&node.web, &path, "");
    assert_eq!(status, 200);
    assert_eq!(header(&head, "content-type"), Some("image/jpeg"));
    assert_eq!(header(&head, "x-content-type-options"), Some("nosniff"));
    assert_eq!(
        header(&head, "cache-control"),
        Some("public, max-age=31536000, immutable")
    );
    let etag = header(&head, "etag").unwrap().to_string();
    assert_eq!(etag, format!("\"{hash}\""));
    assert_eq!(blake3::hash(&body).to_hex().as_str(), hash);
    let decoded = image::load_from_memory(&body).unwrap();
    assert_eq!((decoded.width(), decoded.height()), (200, 400), "upright");

    // A range, a range past the end, a client that has it already.
    let (status, head, part) = get_with(&node.web, &path, "Range: bytes=10-109\r\n");
    assert_eq!(status, 206);
    assert_eq!(part, body[10..110]);
    assert_eq!(
        header(&head, "content-range"),
        Some(format!("bytes 10-109/{}", body.len()).as_str())
    );
    let (status, _, _) = get_with(&node.web, &path, "Range: bytes=99999999-\r\n");
    assert_eq!(status, 416);
    let (status, _, _) = get_with(&node.web, &path, &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(status, 304);

    // The pages: the picture at its size (two pixels per CSS pixel), with
    // its alt text, lazily.
    let (status, page) = node.text("/");
    assert_eq!(status, 200);
    let img = format!(
        "<img src=\"{path}\" alt=\"boats at dawn\" width=\"100\" height=\"200\" loading=\"lazy\""
    );
    assert!(page.contains(&img), "{page}");
    let (_, feed) = node.text("/feed.atom");
    assert!(
        feed.contains(&format!(
            "rel=\"enclosure\" type=\"image/jpeg\" length=\"{}\"",
            body.len()
        )),
        "{feed}"
    );

    // An independent reader: the original has its GPS position and EXIF
    // block; what the node serves has neither.
    if tools_present(&["exiftool"], "libimage-exiftool-perl") {
        let original = exiftool(&photo);
        assert!(original.get("EXIF:GPSLatitude").is_some(), "{original}");
        assert_eq!(original["EXIF:Orientation"], 6);
        let served = dir.path().join("served.jpg");
        std::fs::write(&served, &body).unwrap();
        let tags = exiftool(&served);
        let keys: Vec<&String> = tags.as_object().unwrap().keys().collect();
        assert!(
            !keys
                .iter()
                .any(|k| k.starts_with("EXIF:") || k.contains("GPS") || k.starts_with("XMP")),
            "metadata survived: {keys:?}"
        );
        assert_eq!(
            (
                tags["File:ImageWidth"].as_u64(),
                tags["File:ImageHeight"].as_u64()
            ),
            (Some(200), Some(400))
        );
    }
    assert!(node.stop().success());
}

#[test]
fn what_is_not_a_picture_is_refused_and_nothing_is_kept() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let cases: [(&str, Vec<u8>, &str); 3] = [
        (
            "bomb.png",
            capsule::picture::testdata::png_header_only(100_000, 100_000),
            "declares 100000 × 100000 pixels",
        ),
        ("cut.jpg", jpeg(300, 200)[..2000].to_vec(), "cannot be read"),
        (
            "page.png",
            b"<!DOCTYPE html><html><body>not a picture</body></html>".to_vec(),
            "this is an HTML page, not a picture",
        ),
    ];
    for (name, bytes, says) in cases {
        let file = dir.path().join(name);
        std::fs::write(&file, bytes).unwrap();
        let out = capsule(
            dir.path(),
            &["post", "look", "--attach", file.to_str().unwrap()],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name} was taken");
        assert!(err.contains(says), "{name}: {err}");
        assert!(err.contains(name), "the message names the file: {err}");
    }
    let log = capsule_ok(dir.path(), &["log"]);
    assert!(log.contains("no entries"), "{log}");
    let kept: Vec<_> = walk(&dir.path().join("blobs"));
    assert!(kept.is_empty(), "nothing kept: {kept:?}");
}

/// Every file under `dir`, recursively.
pub(crate) fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Polls `f` every 100 ms until it is true or `secs` pass.
pub(crate) fn eventually(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what} within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn verify_tells_a_damaged_picture_from_a_missing_one() {
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let (one, two) = (dir.path().join("one.png"), dir.path().join("two.png"));
    crate::common::write_png(&one, 40, 30);
    crate::common::write_png(&two, 30, 40);
    for file in [&one, &two] {
        capsule_ok(
            dir.path(),
            &["post", "x", "--attach", file.to_str().unwrap()],
        );
    }
    let out = capsule_ok(dir.path(), &["verify", "--store"]);
    assert!(out.contains("blobs: 2 sound"), "{out}");
    let mut files = walk(&dir.path().join("blobs"));
    files.sort();
    assert_eq!(files.len(), 2);
    let mut damaged = std::fs::read(&files[0]).unwrap();
    damaged[20] ^= 1;
    std::fs::write(&files[0], damaged).unwrap();
    std::fs::remove_file(&files[1]).unwrap();
    let out = capsule(dir.path(), &["verify", "--store"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    let name = |f: &std::path::PathBuf| f.file_name().unwrap().to_string_lossy().to_string();
    assert!(
        text.contains(&format!("the blob {} is damaged", name(&files[0]))),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "the blob {}, a picture of your own posts, is missing",
            name(&files[1])
        )),
        "{text}"
    );
}

/// An upload is read only for the owner's session: a stranger announcing
/// 60 MB with a made-up session cookie is sent to the login page before a
/// byte of the body is read, whatever the form's type.
#[test]
fn an_upload_without_a_session_is_answered_before_its_body_is_read() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    init(dir.path());
    let node = Up::start(dir.path());
    for content_type in [
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
    ] {
        for path in ["/post", "/profile"] {
            let mut stream = std::net::TcpStream::connect(&node.web).unwrap();
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .unwrap();
            write!(
                stream,
                "POST {path} HTTP/1.1\r\nHost: {}\r\nCookie: capsule_session=made-up\r\nContent-Type: {content_type}\r\nContent-Length: 60000000\r\n\r\n",
                node.web
            )
            .unwrap();
            let mut head = [0u8; 12];
            stream.read_exact(&mut head).unwrap();
            let status = String::from_utf8_lossy(&head[9..12]).to_string();
            assert!(
                status == "303" || status == "400",
                "{path} {content_type}: {status}"
            );
        }
    }
    assert!(node.stop().success());
}
