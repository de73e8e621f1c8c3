//! Pictures across nodes: carried by mirrors to nodes that never met
//! their author, fetched past peers that lie about them, and kept within
//! a mirror's media budget.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{Up, capsule_ok, get_with, init, jpeg};
use crate::pictures::{attachments, eventually, walk};

#[test]
fn a_picture_outlives_its_origin_on_nodes_that_never_met_it() {
    let (a_dir, b_dir, c_dir) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let alice = init(a_dir.path());
    init(b_dir.path());
    init(c_dir.path());
    let photo = a_dir.path().join("photo.jpg");
    std::fs::write(&photo, jpeg(640, 480)).unwrap();
    capsule_ok(
        a_dir.path(),
        &[
            "post",
            "from alice",
            "--attach",
            photo.to_str().unwrap(),
            "--alt",
            "a gradient",
        ],
    );
    let a = Up::start(a_dir.path());
    let hash = attachments(&a, &alice, 1)[0]["hash"]
        .as_str()
        .unwrap()
        .to_string();
    let original = std::fs::read(a_dir.path().join("blobs").join(&hash[..2]).join(&hash)).unwrap();
    let path = format!("/api/v1/blobs/{hash}");

    // B mirrors alice from her node.
    capsule_ok(b_dir.path(), &["mirror", &alice]);
    let b = Up::start_with(b_dir.path(), &["--peer", &a.sync, "--sync-interval", "0.5"]);
    eventually(30, "B serves alice's picture", || {
        get_with(&b.web, &path, "").0 == 200
    });
    assert!(a.stop().success());

    // C knows only B.
    capsule_ok(c_dir.path(), &["mirror", &alice]);
    let c = Up::start_with(c_dir.path(), &["--peer", &b.sync, "--sync-interval", "0.5"]);
    eventually(30, "C serves alice's picture", || {
        get_with(&c.web, &path, "").0 == 200
    });
    let (_, _, served) = get_with(&c.web, &path, "");
    assert_eq!(served, original, "the bytes alice's node kept");
    let (_, page) = c.text(&format!("/@{alice}"));
    assert!(
        page.contains(&format!("<img src=\"{path}\" alt=\"a gradient\"")),
        "{page}"
    );
    assert!(b.stop().success());
    assert!(c.stop().success());
    capsule_ok(c_dir.path(), &["verify", "--store"]);
}

/// How a hostile peer answers a blob request.
#[derive(Debug, Clone, Copy)]
enum Lie {
    /// Other bytes of the announced length.
    WrongHash,
    /// A size above the one announced.
    OverSize,
    /// The right size, then bytes without end.
    Endless,
    /// Half the bytes, then silence.
    Stalled,
}

/// Answers every blob stream on connections to `endpoint` with `lie`.
fn lying_peer(endpoint: quinn::Endpoint, bytes: Vec<u8>, lie: Lie) {
    tokio::spawn(async move {
        while let Some(incoming) = endpoint.accept().await {
            let Ok(connection) = incoming.await else {
                continue;
            };
            let bytes = bytes.clone();
            tokio::spawn(async move {
                while let Ok((mut send, mut recv)) = connection.accept_bi().await {
                    let mut request = [0u8; 34];
                    if recv.read_exact(&mut request).await.is_err() {
                        return;
                    }
                    let size = bytes.len() as u64;
                    let mut head = vec![capsule::mesh::fetch::HELD];
                    let claimed = if let Lie::OverSize = lie {
                        size + 10
                    } else {
                        size
                    };
                    head.extend_from_slice(&claimed.to_be_bytes());
                    let _ = send.write_all(&head).await;
                    match lie {
                        Lie::WrongHash => {
                            let _ = send.write_all(&vec![7u8; bytes.len()]).await;
                        }
                        Lie::OverSize => {
                            let _ = send.write_all(&bytes).await;
                            let _ = send.write_all(&[0u8; 10]).await;
                        }
                        Lie::Endless => loop {
                            if send.write_all(&[1u8; 65536]).await.is_err() {
                                return;
                            }
                        },
                        Lie::Stalled => {
                            let _ = send.write_all(&bytes[..bytes.len() / 2]).await;
                            tokio::time::sleep(Duration::from_secs(3600)).await;
                        }
                    }
                    let _ = send.finish();
                }
            });
        }
    });
}

/// Hostile peers that lie about a blob cost a bounded time each and leave
/// no byte behind; the same fetch then gets the blob from an honest peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_lying_about_a_picture_waste_bounded_time_and_leave_nothing() {
    use capsule::identity::Identity;
    use capsule::log::builder::LogBuilder;
    use capsule::log::record::{BlobRef, Picture, Record};
    use capsule::mesh::fetch::Fetcher;
    use capsule::mesh::peers::LivePeers;
    use capsule::store::Store;
    use capsule::store::blobs::BlobId;
    use capsule::sync::transport::{self, ALPN_LIVE};
    use std::sync::Arc;

    let bytes = jpeg(300, 300);
    let id = BlobId::of(&bytes);
    let size = bytes.len() as u64;
    // The author's post names the blob; the victim and an honest peer hold
    // the entry, the honest peer the blob too.
    let author = Identity::from_seed([0xa7; 32]);
    let record = Record::PostWithPictures {
        text: "look".into(),
        reply_to: None,
        pictures: vec![Picture {
            blob: BlobRef {
                hash: id.0,
                size,
                media_type: "image/jpeg".into(),
            },
            width: 300,
            height: 300,
            alt: String::new(),
            thumbnail: None,
        }],
    };
    let payload = record.encode().unwrap();
    let entry = LogBuilder::new(&author).next(1, &payload);
    let hold = |store: &Store| {
        let verified = capsule::log::verify::verify_batch(vec![(entry, Some(payload.clone()))]);
        tokio::task::block_in_place(|| store.append(verified.unwrap()).unwrap());
    };
    let victim = Arc::new(Store::open_in_memory().unwrap());
    let honest = Arc::new(Store::open_in_memory().unwrap());
    hold(&victim);
    hold(&honest);
    honest.blobs().put(&bytes).unwrap();

    // The honest peer answers with the real protocol.
    let honest_id = Identity::from_seed([0x40; 32]);
    let honest_end = transport::listen(&honest_id, "127.0.0.1:0".parse().unwrap()).unwrap();
    let honest_addr = honest_end.local_addr().unwrap();
    {
        let honest = Arc::clone(&honest);
        tokio::spawn(async move {
            while let Some(incoming) = honest_end.accept().await {
                let connection = incoming.await.unwrap();
                let honest = Arc::clone(&honest);
                tokio::spawn(async move {
                    while let Ok((send, mut recv)) = connection.accept_bi().await {
                        let mut kind = [0u8; 1];
                        recv.read_exact(&mut kind).await.unwrap();
                        let _ = capsule::mesh::fetch::answer(&honest, send, recv).await;
                    }
                });
            }
        });
    }
    let victim_id = Arc::new(Identity::from_seed([0x77; 32]));
    let dial = |addr: std::net::SocketAddr, peer: capsule::identity::AuthorKey| {
        let victim_id = Arc::clone(&victim_id);
        async move {
            let endpoint = transport::dialler(addr).unwrap();
            let connection = transport::connect_for(&endpoint, &victim_id, peer, addr, ALPN_LIVE)
                .await
                .unwrap();
            (endpoint, connection)
        }
    };
    let timeout = Duration::from_secs(2);
    for lie in [Lie::WrongHash, Lie::OverSize, Lie::Endless, Lie::Stalled] {
        // The liar holds the author's key: the fetcher asks it first.
        let liar = transport::listen(&author, "127.0.0.1:0".parse().unwrap()).unwrap();
        let liar_addr = liar.local_addr().unwrap();
        lying_peer(liar, bytes.clone(), lie);
        let peers = Arc::new(LivePeers::new(Arc::clone(&victim_id), None));
        let (_liar_end, to_liar) = dial(liar_addr, author.author()).await;
        peers.insert(author.author(), to_liar, false);
        let fetcher = Fetcher {
            store: Arc::clone(&victim),
            peers: Arc::clone(&peers),
            web_root: None,
            budget: capsule::mesh::budget::Account::new(u64::MAX),
            timeout,
        };
        let started = Instant::now();
        assert!(!fetcher.fetch_now(id, size).await, "{lie:?} was taken");
        assert!(
            started.elapsed() < timeout * 3,
            "{lie:?} took {:?}",
            started.elapsed()
        );
        assert!(!victim.blobs().has(&id), "{lie:?} left a blob");
        assert_eq!(victim.blob_row(&id.0).unwrap().unwrap().evicted_us, 0);
        // The honest peer beside the liar: the same fetch succeeds.
        let (_honest_end, to_honest) = dial(honest_addr, honest_id.author()).await;
        peers.insert(honest_id.author(), to_honest, false);
        assert!(fetcher.fetch_now(id, size).await, "after {lie:?}");
        assert_eq!(victim.blobs().read(&id).unwrap(), bytes);
        victim.blobs().remove(&id).unwrap();
    }
    assert_eq!(
        walk(
            &victim
                .blobs()
                .path(&id)
                .parent()
                .unwrap()
                .parent()
                .unwrap()
                .join("tmp")
        )
        .len(),
        0
    );
}

/// A JPEG of noise, which compresses badly: about 1 MB at 1400 × 1000.
pub(crate) fn noise_jpeg(width: u32, height: u32, seed: u64) -> Vec<u8> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let image = image::RgbImage::from_fn(width, height, |_, _| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let b = (state >> 33).to_le_bytes();
        image::Rgb([b[0], b[1], b[2]])
    });
    crate::common::jpeg_of(image)
}

/// `capsule status --json` of a running node.
fn status(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&capsule_ok(dir, &["status", "--json"])).unwrap()
}

#[test]
fn a_mirror_keeps_other_peoples_pictures_within_its_budget_and_never_its_own() {
    const BUDGET: u64 = 5 << 20;
    let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let alice = init(a_dir.path());
    let bob = init(b_dir.path());
    // Alice posts about 20 MB of pictures, four to a post.
    for post in 0..5u64 {
        let mut args = vec!["post".to_string(), format!("set {post}")];
        for i in 0..4u64 {
            let file = a_dir.path().join(format!("p{post}-{i}.jpg"));
            std::fs::write(&file, noise_jpeg(1400, 1000, post * 4 + i)).unwrap();
            args.extend(["--attach".to_string(), file.to_str().unwrap().to_string()]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        capsule_ok(a_dir.path(), &args);
    }
    // Bob has a picture of his own (and its thumbnail), outside the budget.
    let own = b_dir.path().join("own.jpg");
    std::fs::write(&own, noise_jpeg(1400, 1000, 99)).unwrap();
    capsule_ok(
        b_dir.path(),
        &["post", "mine", "--attach", own.to_str().unwrap()],
    );
    let own_count = status(b_dir.path())["disk"]["blobs"]["own_count"].clone();
    let a = Up::start(a_dir.path());
    let alice_blobs = status(a_dir.path())["disk"]["blobs"].clone();
    let alice_count = alice_blobs["own_count"].as_u64().unwrap();
    assert!(
        alice_blobs["own"].as_u64().unwrap() > 4 * BUDGET,
        "{alice_blobs}"
    );
    capsule_ok(b_dir.path(), &["mirror", &alice]);
    let b = Up::start_with(
        b_dir.path(),
        &[
            "--peer",
            &a.sync,
            "--sync-interval",
            "0.5",
            "--media-budget",
            "5MiB",
        ],
    );
    eventually(120, "bob has seen every picture of alice's", || {
        let blobs = status(b_dir.path())["disk"]["blobs"].clone();
        let mirrored = blobs["mirrored"].as_u64().unwrap();
        assert!(mirrored <= BUDGET, "{mirrored} bytes held, over the budget");
        assert_eq!(
            blobs["own_count"], own_count,
            "bob's own picture stays: {blobs}"
        );
        blobs["mirrored_count"].as_u64().unwrap() + blobs["evicted_count"].as_u64().unwrap()
            == alice_count
    });
    // What bob keeps, he serves, byte for byte; what he dropped, he says so
    // and links to alice's node.
    let (mut kept, mut dropped) = (0, 0);
    for seq in 1..=5 {
        for picture in attachments(&b, &alice, seq) {
            let hash = picture["hash"].as_str().unwrap();
            let (status, _, body) = get_with(&b.web, &format!("/api/v1/blobs/{hash}"), "");
            match status {
                200 => {
                    assert_eq!(blake3::hash(&body).to_hex().as_str(), hash);
                    kept += 1;
                }
                404 => dropped += 1,
                other => panic!("{other}"),
            }
        }
    }
    assert!(kept >= 1 && dropped >= 1, "kept {kept}, dropped {dropped}");
    let (_, page) = b.text(&format!("/@{alice}"));
    assert!(page.contains("Picture not held here"), "{page}");
    let own_hash = attachments(&b, &bob, 1)[0]["hash"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        get_with(&b.web, &format!("/api/v1/blobs/{own_hash}"), "").0,
        200
    );
    assert!(a.stop().success());
    assert!(b.stop().success());
    let out = capsule_ok(b_dir.path(), &["verify", "--store"]);
    assert!(
        out.contains("evicted to keep within the media budget"),
        "{out}"
    );
}

/// How many of its own blobs the node in `dir` holds (`capsule status`).
pub(crate) fn own_blobs(dir: &Path) -> u64 {
    status(dir)["disk"]["blobs"]["own_count"].as_u64().unwrap()
}

/// How many blobs of others the node in `dir` holds (`capsule status`).
pub(crate) fn mirrored_blobs(dir: &Path) -> u64 {
    status(dir)["disk"]["blobs"]["mirrored_count"]
        .as_u64()
        .unwrap()
}
