//! The editor while the agent swaps a workspace folder for a symlink that leads out of it
//! (`renameat2` with `RENAME_EXCHANGE`, as fast as it can): no view shows a byte of the file
//! outside, no create or edit lands outside, however the two interleave.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use ohd_runtime::editor::{Editor, EditorCommand, EditorOutcome};
use ohd_runtime::workspace::Workspace;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

const SECRET: &str = "TOPSECRET-editor-7f3a";
/// Bounds of the attack: this many tries of each command, or this long, whichever first.
const TRIES: usize = 3000;
const LIMIT: Duration = Duration::from_secs(20);

/// `ws/sub` (a real folder) and `ws/link` (a symlink to `outside`) exchanged in a loop until
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

/// What is outside the workspace, sorted, with each file's content.
fn snapshot(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| {
            (
                e.path(),
                std::fs::read_to_string(e.path()).unwrap_or_default(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn the_editor_never_reads_or_writes_outside_while_a_folder_is_swapped_for_a_symlink() {
    let temp = tempfile::tempdir().unwrap();
    let outside = temp.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), format!("{SECRET}\n")).unwrap();
    std::fs::write(outside.join("edit.txt"), "outside\n").unwrap();
    let ws_path = temp.path().join("ws");
    std::fs::create_dir_all(ws_path.join("sub")).unwrap();
    std::fs::write(ws_path.join("sub/secret.txt"), "harmless\n").unwrap();
    std::fs::write(ws_path.join("sub/edit.txt"), "inside\n").unwrap();
    std::os::unix::fs::symlink(&outside, ws_path.join("link")).unwrap();
    let before = snapshot(&outside);
    let ws = Workspace::new(ws_path.clone(), PathBuf::from("/workspace")).unwrap();
    let mut editor = Editor::new(ws);

    let stop = Arc::new(AtomicBool::new(false));
    let swaps = swapper(&ws_path, stop.clone());
    let started = Instant::now();
    let (mut tries, mut escapes, mut answered) = (0, Vec::new(), 0);
    while tries < TRIES && started.elapsed() < LIMIT {
        tries += 1;
        let commands = [
            EditorCommand::View {
                path: "/workspace/sub/secret.txt".into(),
                view_range: None,
            },
            EditorCommand::View {
                path: "sub".into(),
                view_range: None,
            },
            EditorCommand::Create {
                path: format!("sub/new-{tries}.txt"),
                file_text: "created\n".into(),
            },
            EditorCommand::Insert {
                path: "sub/edit.txt".into(),
                insert_line: 0,
                new_str: format!("edit {tries}"),
            },
        ];
        for command in commands {
            let outcome = editor.execute(command.clone());
            if let Ok(outcome) = &outcome {
                answered += 1;
                let text = match outcome {
                    EditorOutcome::Viewed { content, .. } => content.clone(),
                    EditorOutcome::Edited { diff, .. } => diff.clone(),
                    EditorOutcome::Image { bytes, .. } => String::from_utf8_lossy(bytes).into(),
                };
                if text.contains(SECRET) || text.contains("outside") {
                    escapes.push(format!("{command:?}: {text}"));
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swaps.join().unwrap();
    eprintln!(
        "{tries} rounds of 4 commands ({answered} answered) in {:?} during {swaps} swaps",
        started.elapsed()
    );
    assert!(swaps > 100, "the swap did not run: {swaps}");
    // Most commands meet the symlink and are refused; enough must meet the folder for the
    // race to have been run at all.
    assert!(answered >= 100, "hardly anything succeeded: {answered}");
    assert!(
        escapes.is_empty(),
        "{} escapes: {:?}",
        escapes.len(),
        escapes.first()
    );
    // Nothing was created or changed outside.
    assert_eq!(snapshot(&outside), before);
}
