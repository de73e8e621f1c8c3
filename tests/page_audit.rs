//! Lighthouse (npm, pinned in .ci/lighthouse) in Debian's Chromium against
//! a node's pages with pictures: the home page and a post's page score at
//! least 0.95 in performance, accessibility, best practices and SEO.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{Up, capsule_ok, init, jpeg, write_png};

/// Lowest score accepted in each category.
const AT_LEAST: f64 = 0.95;

fn lighthouse() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/lighthouse/node_modules/.bin/lighthouse")
}

/// The scores of `url`, by category, and the failing audits, in words.
fn audit(url: &str, out: &Path) -> (serde_json::Map<String, serde_json::Value>, Vec<String>) {
    let run = Command::new(lighthouse())
        .arg(url)
        .arg("--chrome-flags=--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking --disable-component-update --disable-sync")
        .args([
            "--only-categories=performance,accessibility,best-practices,seo",
            "--output=json",
            "--quiet",
        ])
        .arg(format!("--output-path={}", out.display()))
        .env("CHROME_PATH", "/usr/bin/chromium")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(out).unwrap()).unwrap();
    let mut scores = serde_json::Map::new();
    let mut failing = Vec::new();
    for (name, category) in report["categories"].as_object().unwrap() {
        scores.insert(name.clone(), category["score"].clone());
        for item in category["auditRefs"].as_array().unwrap() {
            let audit = &report["audits"][item["id"].as_str().unwrap()];
            if item["weight"].as_f64().unwrap_or(0.0) > 0.0
                && audit["score"].as_f64().is_some_and(|s| s < 1.0)
            {
                failing.push(format!("{name}: {} ({})", item["id"], audit["title"]));
            }
        }
    }
    (scores, failing)
}

#[test]
fn pages_with_pictures_score_well_in_lighthouse() {
    if !crate::common::tools_present(&["chromium"], "chromium") {
        return;
    }
    if !lighthouse().exists() {
        assert!(
            std::env::var_os("CI").is_none(),
            "lighthouse is missing; .ci/install installs it (npm ci in .ci/lighthouse)"
        );
        eprintln!("SKIPPED: lighthouse is not installed (`npm ci --prefix .ci/lighthouse`)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let author = init(dir.path());
    capsule_ok(
        dir.path(),
        &[
            "profile",
            "--name",
            "Ada",
            "--bio",
            "Writes from her own node.",
        ],
    );
    let (photo, drawing) = (dir.path().join("photo.jpg"), dir.path().join("drawing.png"));
    std::fs::write(&photo, jpeg(2400, 1600)).unwrap();
    write_png(&drawing, 320, 240);
    capsule_ok(
        dir.path(),
        &[
            "post",
            "The harbour at dawn; more at https://example.org/harbour",
            "--attach",
            photo.to_str().unwrap(),
            "--alt",
            "boats on still water",
            "--attach",
            drawing.to_str().unwrap(),
            "--alt",
            "a drawing of the harbour",
        ],
    );
    capsule_ok(dir.path(), &["post", "A second post, without pictures"]);
    let node = Up::start(dir.path());
    for (page, path) in [
        ("home page", "/".to_string()),
        ("post with pictures", format!("/@{author}/2")),
    ] {
        let (scores, failing) = audit(
            &format!("http://{}{path}", node.web),
            &dir.path().join("report.json"),
        );
        eprintln!("{page}: {scores:?}");
        for (category, score) in &scores {
            let score = score.as_f64().unwrap();
            assert!(score >= AT_LEAST, "{page}: {category} {score}; {failing:?}");
        }
        assert_eq!(scores.len(), 4, "{scores:?}");
    }
    assert!(node.stop().success());
}
