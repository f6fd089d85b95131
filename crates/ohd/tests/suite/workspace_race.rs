//! The file routes while the agent swaps a workspace folder for a symlink that leads out of it
//! (`renameat2` with `RENAME_EXCHANGE`, in a tight loop): `select-file`, `list-files`,
//! `git/diff`, `zip-directory` never show what is outside, and `upload-files` never writes
//! there, however the requests and the swaps interleave. The attack that found issue 9.

use crate::common::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SECRET: &str = "TOPSECRET-routes-91c2";
/// A file only outside: its name in a listing or a zip is an escape too.
const OUTSIDE_ONLY: &str = "outside-only-name.txt";
/// Bounds of the attack on each route: this many requests, or this long, whichever first.
const REQUESTS: usize = 2000;
const LIMIT: Duration = Duration::from_secs(20);

/// `ws/sub` (a real folder) and `ws/link` (a symlink to the outside folder) exchanged until
/// `stop`; the number of swaps made.
fn swapper(ws: &Path, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<u64> {
    let ws = ws.to_owned();
    std::thread::spawn(move || {
        use rustix::fs::{Mode, OFlags, RenameFlags};
        let dir = rustix::fs::open(&ws, OFlags::DIRECTORY | OFlags::RDONLY, Mode::empty()).unwrap();
        let swaps = AtomicU64::new(0);
        while !stop.load(Ordering::Relaxed) {
            rustix::fs::renameat_with(&dir, "sub", &dir, "link", RenameFlags::EXCHANGE).unwrap();
            swaps.fetch_add(1, Ordering::Relaxed);
        }
        swaps.load(Ordering::Relaxed)
    })
}

fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com"])
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("HOME", dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("git must be installed for these tests");
    assert!(status.success(), "git {args:?} failed");
}

/// What one route answered: how many requests, how many of them succeeded, and what leaked.
#[derive(Default, Debug)]
struct Tally {
    requests: usize,
    ok: usize,
    escapes: Vec<String>,
}

fn leaks(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    text.contains(SECRET) || text.contains(OUTSIDE_ONLY)
}

/// Every entry's name and content, decompressed.
fn zip_leaks(bytes: Vec<u8>) -> bool {
    let Ok(mut archive) = zip::ZipArchive::new(std::io::Cursor::new(bytes)) else {
        return false;
    };
    for i in 0..archive.len() {
        let mut entry = archive.by_index(i).unwrap();
        let mut content = Vec::new();
        std::io::Read::read_to_end(&mut entry, &mut content).unwrap();
        if leaks(entry.name_raw()) || (!entry.is_symlink() && leaks(&content)) {
            return true;
        }
    }
    false
}

fn upload_body(name: &str) -> (String, Vec<u8>) {
    let boundary = "ohd-race-boundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\nuploaded\r\n--{boundary}--\r\n"
    );
    (
        format!("multipart/form-data; boundary={boundary}"),
        body.into_bytes(),
    )
}

/// Hits one route until the bounds, checking each answer for what is only outside.
async fn attack(ohd: Arc<Ohd>, route: &'static str, conv: String) -> (&'static str, Tally) {
    let base = format!("/api/conversations/{conv}");
    let started = Instant::now();
    let mut tally = Tally::default();
    while tally.requests < REQUESTS && started.elapsed() < LIMIT {
        let n = tally.requests;
        tally.requests += 1;
        let request = match route {
            "select-file" => ohd
                .http
                .get(ohd.url(&format!("{base}/select-file?file=sub/secret.txt"))),
            "list-files" => ohd
                .http
                .get(ohd.url(&format!("{base}/list-files?path=sub"))),
            "git/diff" => ohd
                .http
                .get(ohd.url(&format!("{base}/git/diff?path=sub/secret.txt"))),
            "zip-directory" => ohd.http.get(ohd.url(&format!("{base}/zip-directory"))),
            _ => {
                let (content_type, body) = upload_body(&format!("sub/up-{n}.txt"));
                ohd.http
                    .post(ohd.url(&format!("{base}/upload-files")))
                    .header("content-type", content_type)
                    .body(body)
            }
        };
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.bytes().await.unwrap().to_vec();
        assert!(
            [200, 403, 404].contains(&status),
            "{route}: {status} {}",
            String::from_utf8_lossy(&bytes)
        );
        if status == 200 {
            tally.ok += 1;
        }
        let leaked = if route == "zip-directory" {
            zip_leaks(bytes)
        } else {
            leaks(&bytes)
        };
        if leaked {
            tally.escapes.push(format!("{route} #{n}"));
        }
    }
    (route, tally)
}

/// Every file under `dir`, recursively.
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_file_route_reads_or_writes_outside_while_a_folder_is_swapped_for_a_symlink() {
    let ohd = Arc::new(Ohd::start().await);
    let conv = ohd.create_conversation().await;
    let ws = ohd.data_dir.join("workspaces").join(&conv);
    // The secret sits in the data directory, beside `settings.json` and the database.
    let outside = ohd.data_dir.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), format!("{SECRET}\n")).unwrap();
    std::fs::write(outside.join(OUTSIDE_ONLY), SECRET).unwrap();
    std::fs::create_dir_all(ws.join("sub")).unwrap();
    std::fs::write(ws.join("sub/secret.txt"), "harmless\n").unwrap();
    git(&ws, &["init", "-q"]);
    git(&ws, &["add", "-A"]);
    git(&ws, &["commit", "-q", "-m", "first"]);
    std::fs::write(ws.join("sub/secret.txt"), "harmless, changed\n").unwrap();
    std::os::unix::fs::symlink(&outside, ws.join("link")).unwrap();
    let data_before = files_under(&ohd.data_dir);

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = swapper(&ws, stop.clone());
    let routes = [
        "select-file",
        "list-files",
        "git/diff",
        "upload-files",
        "zip-directory",
    ];
    let attacks: Vec<_> = routes
        .iter()
        .map(|route| tokio::spawn(attack(ohd.clone(), route, conv.clone())))
        .collect();
    let mut tallies = Vec::new();
    for attack in attacks {
        tallies.push(attack.await.unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swaps.join().unwrap();

    eprintln!("{swaps} swaps");
    for (route, tally) in &tallies {
        eprintln!(
            "{route}: {} requests, {} answered 200, {} escapes",
            tally.requests,
            tally.ok,
            tally.escapes.len()
        );
    }
    // Nothing was written outside the workspace: the outside folder and the rest of the data
    // directory hold what they held (the database and the log may grow, not gain files).
    let mut outside_now: Vec<_> = std::fs::read_dir(&outside)
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    outside_now.sort();
    assert_eq!(outside_now, vec![OUTSIDE_ONLY, "secret.txt"]);
    let data_after: Vec<PathBuf> = files_under(&ohd.data_dir)
        .into_iter()
        .filter(|p| !p.starts_with(&ws))
        .collect();
    let data_before: Vec<PathBuf> = data_before
        .into_iter()
        .filter(|p| !p.starts_with(&ws))
        .collect();
    assert_eq!(data_after, data_before);
    assert!(swaps > 1000, "the swap hardly ran: {swaps}");
    for (route, tally) in &tallies {
        // The race was run both ways: some requests met the folder.
        assert!(tally.ok > 0, "{route}: nothing succeeded: {tally:?}");
        assert!(tally.escapes.is_empty(), "{route}: {:?}", tally.escapes);
    }
    // The uploads that got through are inside, and the staged files are all gone.
    let inside = files_under(&ws);
    assert!(inside.iter().any(|p| p.to_string_lossy().contains("/up-")));
    assert!(
        !inside
            .iter()
            .any(|p| p.to_string_lossy().contains(".ohd-upload"))
    );
}
