//! The `str_replace_editor` tool: view, create, str_replace, insert, undo_edit, with the
//! workspace as its boundary. Errors are answers for the model, worded to say what to do.
//!
//! Every file is reached through the workspace's directory handle ([`Workspace::dir`]) with a
//! path relative to it, so a folder swapped for a symlink while a command runs cannot make a
//! read or a write land outside the workspace.

use crate::truncate;
use crate::workspace::{self, Workspace};
use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Edits remembered per file for `undo_edit`.
const UNDO_DEPTH: usize = 10;
/// Lines shown around an edit.
const SNIPPET_CONTEXT: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub enum EditorCommand {
    View {
        path: String,
        view_range: Option<(i64, i64)>,
    },
    Create {
        path: String,
        file_text: String,
    },
    StrReplace {
        path: String,
        old_str: String,
        new_str: String,
    },
    Insert {
        path: String,
        insert_line: i64,
        new_str: String,
    },
    UndoEdit {
        path: String,
    },
}

/// A successful command. `Viewed` becomes a `read` observation, `Edited` an `edit` one.
#[derive(Debug, Clone, PartialEq)]
pub enum EditorOutcome {
    Viewed {
        /// The path as the agent sees it.
        path: String,
        content: String,
    },
    /// `view` of a PNG, JPEG, GIF or WebP image: its bytes, for models that take images.
    Image {
        path: String,
        media_type: &'static str,
        bytes: Vec<u8>,
    },
    Edited {
        path: String,
        content: String,
        prev_exist: bool,
        old_content: Option<String>,
        new_content: Option<String>,
        diff: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EditorError(pub String);

fn fail<T>(message: impl Into<String>) -> Result<T, EditorError> {
    Err(EditorError(message.into()))
}

/// The media type of an image in one of the formats the providers take, by its magic bytes.
pub fn image_type(head: &[u8]) -> Option<&'static str> {
    match head {
        [0x89, b'P', b'N', b'G', ..] => Some("image/png"),
        [0xFF, 0xD8, 0xFF, ..] => Some("image/jpeg"),
        [b'G', b'I', b'F', b'8', ..] => Some("image/gif"),
        [
            b'R',
            b'I',
            b'F',
            b'F',
            _,
            _,
            _,
            _,
            b'W',
            b'E',
            b'B',
            b'P',
            ..,
        ] => Some("image/webp"),
        _ => None,
    }
}

pub struct Editor {
    workspace: Workspace,
    /// Keyed by the path relative to the workspace, links resolved.
    history: HashMap<PathBuf, Vec<String>>,
}

impl Editor {
    pub fn new(workspace: Workspace) -> Self {
        Editor {
            workspace,
            history: HashMap::new(),
        }
    }

    pub fn workspace(&self) -> &Workspace {
        &self.workspace
    }

    pub fn execute(&mut self, command: EditorCommand) -> Result<EditorOutcome, EditorError> {
        match command {
            EditorCommand::View { path, view_range } => self.view(&path, view_range),
            EditorCommand::Create { path, file_text } => self.create(&path, &file_text),
            EditorCommand::StrReplace {
                path,
                old_str,
                new_str,
            } => self.str_replace(&path, &old_str, &new_str),
            EditorCommand::Insert {
                path,
                insert_line,
                new_str,
            } => self.insert(&path, insert_line, &new_str),
            EditorCommand::UndoEdit { path } => self.undo(&path),
        }
    }

    /// The path relative to the workspace, and as the agent sees it (`/workspace/a.py`).
    fn resolve(&self, given: &str) -> Result<(PathBuf, String), EditorError> {
        let refused = |e: workspace::PathError| EditorError(e.to_string());
        // Shown as named (links not replaced), as the agent wrote it.
        let shown = self
            .workspace
            .agent_path(&self.workspace.lexical(given).map_err(refused)?);
        let rel = self.workspace.resolve(given).map_err(refused)?;
        Ok((rel, shown))
    }

    /// An error of the handle, for the model: a path that led out is said to be outside, as
    /// [`Workspace::resolve`] says it.
    fn io_error(&self, what: &str, shown: &str, e: std::io::Error) -> EditorError {
        if workspace::is_escape(&e) {
            return EditorError(format!(
                "the path {shown} is outside the workspace {}; only files under it can be used",
                self.workspace.agent_root().display()
            ));
        }
        EditorError(format!("Cannot {what} {shown}: {e}"))
    }

    /// An existing regular file, opened to read.
    fn open_file(&self, rel: &Path, shown: &str) -> Result<std::fs::File, EditorError> {
        let file = match self.workspace.open_read(rel) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return fail(format!(
                    "The path {shown} does not exist. Check the path, or create the file with the `create` command."
                ));
            }
            Err(e) => return Err(self.io_error("read", shown, e)),
        };
        match file.metadata() {
            Ok(meta) if meta.is_file() => Ok(file),
            Ok(_) => fail(format!(
                "{shown} is not a regular file; the editor only works on text files."
            )),
            Err(e) => Err(self.io_error("read", shown, e)),
        }
    }

    fn read_text(&self, rel: &Path, shown: &str) -> Result<String, EditorError> {
        let mut file = self.open_file(rel, shown)?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(|e| self.io_error("read", shown, e))?;
        if bytes.iter().take(8192).any(|b| *b == 0) {
            return fail(format!(
                "{shown} is a binary file; the editor only works on text. Use a shell command to inspect it."
            ));
        }
        String::from_utf8(bytes).or_else(|e| Ok(String::from_utf8_lossy(e.as_bytes()).into_owned()))
    }

    /// An image file, told by its first bytes (not its name): its bytes, up to the 5 MB the
    /// providers take.
    fn view_image(&self, rel: &Path, shown: &str) -> Result<Option<EditorOutcome>, EditorError> {
        const MAX_IMAGE_BYTES: u64 = 5 * 1024 * 1024;
        let mut file = self.open_file(rel, shown)?;
        let mut head = [0u8; 12];
        let read = file
            .read(&mut head)
            .map_err(|e| self.io_error("read", shown, e))?;
        let Some(media_type) = image_type(&head[..read]) else {
            return Ok(None);
        };
        let size = file
            .metadata()
            .map_err(|e| self.io_error("read", shown, e))?
            .len();
        if size > MAX_IMAGE_BYTES {
            return fail(format!(
                "{shown} is an image of {} KB, over the {} KB a model takes; make a smaller copy (for example with ImageMagick's convert -resize) and view that.",
                size / 1024,
                MAX_IMAGE_BYTES / 1024
            ));
        }
        let mut bytes = head[..read].to_vec();
        file.take(MAX_IMAGE_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|e| self.io_error("read", shown, e))?;
        Ok(Some(EditorOutcome::Image {
            path: shown.to_owned(),
            media_type,
            bytes,
        }))
    }

    /// Replaces an existing file's content in place (see [`Workspace::open_rewrite`] for why
    /// in place): its owner and mode stay.
    fn write_text(&self, rel: &Path, shown: &str, text: &str) -> Result<(), EditorError> {
        let write = || -> std::io::Result<()> {
            let mut file = self.workspace.open_rewrite(rel)?;
            file.write_all(text.as_bytes())?;
            file.set_len(text.len() as u64)
        };
        write().map_err(|e| self.io_error("write", shown, e))
    }

    fn view(&self, given: &str, range: Option<(i64, i64)>) -> Result<EditorOutcome, EditorError> {
        let (rel, shown) = self.resolve(given)?;
        if self
            .workspace
            .dir()
            .metadata(&rel)
            .is_ok_and(|m| m.is_dir())
        {
            if range.is_some() {
                return fail("view_range cannot be used when viewing a directory.");
            }
            return Ok(EditorOutcome::Viewed {
                content: self.list_dir(&rel, &shown),
                path: shown,
            });
        }
        if range.is_none()
            && let Some(image) = self.view_image(&rel, &shown)?
        {
            return Ok(image);
        }
        if range.is_none()
            && let Some(content) = self.view_large(&rel, &shown)?
        {
            return Ok(EditorOutcome::Viewed {
                path: shown,
                content,
            });
        }
        let text = self.read_text(&rel, &shown)?;
        let lines: Vec<&str> = text.lines().collect();
        let (first, last) = match range {
            None => (1, lines.len()),
            Some((start, end)) => {
                let count = lines.len() as i64;
                if start < 1 || start > count.max(1) {
                    return fail(format!(
                        "Invalid view_range [{start}, {end}]: the first line must be between 1 and {count}."
                    ));
                }
                let end = if end == -1 { count } else { end };
                if end < start || end > count {
                    return fail(format!(
                        "Invalid view_range [{start}, {}]: the last line must be between {start} and {count}, or -1 for the end of the file.",
                        end
                    ));
                }
                (start as usize, end as usize)
            }
        };
        let (numbered, cut) = number_lines_within(&lines, first, last, truncate::MAX_OUTPUT_CHARS);
        let mut content =
            format!("Here's the result of running `cat -n` on {shown}:\n{numbered}\n");
        if cut {
            content.push_str("[The file is long and was cut in the middle; use view_range to see the lines you need.]\n");
        }
        Ok(EditorOutcome::Viewed {
            path: shown,
            content,
        })
    }

    fn list_dir(&self, dir: &Path, shown: &str) -> String {
        let mut entries = Vec::new();
        collect_entries(&self.workspace, dir, Path::new(""), 2, &mut entries);
        entries.sort();
        let mut out = format!(
            "Here are the files and directories up to 2 levels deep in {shown}, excluding hidden items:\n{shown}/\n"
        );
        for rel in entries {
            // Followed, as before, but only inside the workspace: a link to a folder shows `/`.
            let is_dir = self
                .workspace
                .dir()
                .metadata(dir.join(&rel))
                .is_ok_and(|m| m.is_dir());
            let suffix = if is_dir { "/" } else { "" };
            out.push_str(&format!(
                "{}/{}{}\n",
                shown.trim_end_matches('/'),
                rel.display(),
                suffix
            ));
        }
        truncate::middle(&out, truncate::MAX_OUTPUT_CHARS).0
    }

    fn create(&mut self, given: &str, text: &str) -> Result<EditorOutcome, EditorError> {
        let (rel, shown) = self.resolve(given)?;
        let exists = || {
            fail(format!(
                "A file already exists at {shown}; `create` does not overwrite. Use `str_replace` to change it."
            ))
        };
        // A dangling symlink counts as existing: creating through it is refused.
        if rel == Path::new(".") || self.workspace.dir().symlink_metadata(&rel).is_ok() {
            return exists();
        }
        let mut file = match self.workspace.create_new(&rel) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => return exists(),
            Err(e) => return Err(self.io_error("create", &shown, e)),
        };
        file.write_all(text.as_bytes())
            .map_err(|e| self.io_error("write", &shown, e))?;
        self.remember(&rel, String::new());
        Ok(EditorOutcome::Edited {
            content: format!("File created successfully at: {shown}"),
            diff: unified_diff(&shown, "", text),
            prev_exist: false,
            old_content: None,
            new_content: Some(text.to_owned()),
            path: shown,
        })
    }

    fn str_replace(
        &mut self,
        given: &str,
        old: &str,
        new: &str,
    ) -> Result<EditorOutcome, EditorError> {
        let (rel, shown) = self.resolve(given)?;
        if old.is_empty() {
            return fail("old_str must not be empty; to add text, use `insert`.");
        }
        let text = self.read_text(&rel, &shown)?;
        let positions: Vec<usize> = text.match_indices(old).map(|(i, _)| i).collect();
        match positions.len() {
            0 => {
                return fail(format!(
                    "No replacement was made: old_str did not appear verbatim in {shown}. Check its whitespace and indentation, and view the file to copy the exact text."
                ));
            }
            1 => {}
            n => {
                let lines: Vec<String> = positions
                    .iter()
                    .map(|p| (line_of(&text, *p) + 1).to_string())
                    .collect();
                return fail(format!(
                    "No replacement was made: old_str appears {n} times in {shown} (lines {}). Include more surrounding lines so it matches exactly once.",
                    lines.join(", ")
                ));
            }
        }
        let at = positions[0];
        let updated = format!("{}{}{}", &text[..at], new, &text[at + old.len()..]);
        self.write_text(&rel, &shown, &updated)?;
        self.remember(&rel, text.clone());
        let first_line = line_of(&updated, at);
        let snippet = snippet(&updated, first_line, new.lines().count().max(1));
        Ok(EditorOutcome::Edited {
            content: format!(
                "The file {shown} has been edited. Here's the result of running `cat -n` on a snippet of {shown}:\n{snippet}\nReview the changes and make sure they are as expected. Edit the file again if necessary."
            ),
            diff: unified_diff(&shown, &text, &updated),
            prev_exist: true,
            old_content: Some(old.to_owned()),
            new_content: Some(new.to_owned()),
            path: shown,
        })
    }

    fn insert(&mut self, given: &str, after: i64, new: &str) -> Result<EditorOutcome, EditorError> {
        let (rel, shown) = self.resolve(given)?;
        let text = self.read_text(&rel, &shown)?;
        let lines: Vec<&str> = text.lines().collect();
        if after < 0 || after as usize > lines.len() {
            return fail(format!(
                "Invalid insert_line {after}: it must be between 0 (the start) and {} (after the last line).",
                lines.len()
            ));
        }
        let after = after as usize;
        let mut out: Vec<&str> = Vec::with_capacity(lines.len() + 4);
        out.extend_from_slice(&lines[..after]);
        out.extend(new.lines());
        if new.is_empty() {
            out.push("");
        }
        out.extend_from_slice(&lines[after..]);
        let mut updated = out.join("\n");
        if text.ends_with('\n') || text.is_empty() {
            updated.push('\n');
        }
        self.write_text(&rel, &shown, &updated)?;
        self.remember(&rel, text.clone());
        let snippet = snippet(&updated, after, new.lines().count().max(1));
        Ok(EditorOutcome::Edited {
            content: format!(
                "The file {shown} has been edited. Here's the result of running `cat -n` on a snippet of the edited file:\n{snippet}\nReview the changes and make sure they are as expected (correct indentation, no duplicate lines). Edit the file again if necessary."
            ),
            diff: unified_diff(&shown, &text, &updated),
            prev_exist: true,
            old_content: None,
            new_content: Some(new.to_owned()),
            path: shown,
        })
    }

    fn undo(&mut self, given: &str) -> Result<EditorOutcome, EditorError> {
        let (rel, shown) = self.resolve(given)?;
        let Some(previous) = self.history.get_mut(&rel).and_then(Vec::pop) else {
            return fail(format!("There is no edit of {shown} to undo."));
        };
        let current = self.read_text(&rel, &shown).unwrap_or_default();
        self.write_text(&rel, &shown, &previous)?;
        Ok(EditorOutcome::Edited {
            content: format!(
                "Last edit to {shown} undone successfully. Its content is now:\n{}",
                number_lines(
                    &previous.lines().collect::<Vec<_>>(),
                    1,
                    previous.lines().count()
                )
            ),
            diff: unified_diff(&shown, &current, &previous),
            prev_exist: true,
            old_content: Some(current),
            new_content: Some(previous),
            path: shown,
        })
    }

    fn remember(&mut self, rel: &Path, before: String) {
        let stack = self.history.entry(rel.to_owned()).or_default();
        stack.push(before);
        if stack.len() > UNDO_DEPTH {
            stack.remove(0);
        }
    }
}

/// The entries of `base/below` (both relative to the workspace) down to `depth` levels, as
/// paths relative to `base`, hidden ones left out.
fn collect_entries(
    workspace: &Workspace,
    base: &Path,
    below: &Path,
    depth: usize,
    out: &mut Vec<PathBuf>,
) {
    if depth == 0 {
        return;
    }
    let Ok(read) = workspace.dir().read_dir(base.join(below)) else {
        return;
    };
    for entry in read.flatten() {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with('.') {
            continue;
        }
        let rel = below.join(&name);
        // Not into symlinks: a listing shows the tree as it is, once per folder.
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        out.push(rel.clone());
        if is_dir {
            collect_entries(workspace, base, &rel, depth - 1, out);
        }
    }
}

fn number_lines(lines: &[&str], first: usize, last: usize) -> String {
    let mut out = String::new();
    for (i, line) in lines
        .iter()
        .enumerate()
        .take(last)
        .skip(first.saturating_sub(1))
    {
        out.push_str(&format!("{:6}\t{}\n", i + 1, line));
    }
    out
}

impl Editor {
    /// A whole-file view of a file too large to show whole: only its head and tail are read,
    /// and the lines between are counted, not decoded. `None` for a file small enough to view
    /// as usual.
    fn view_large(&self, rel: &Path, shown: &str) -> Result<Option<String>, EditorError> {
        // Anything odd about the file is left to the ordinary path, which words the errors.
        let Ok(mut file) = self.open_file(rel, shown) else {
            return Ok(None);
        };
        let Ok(size) = file.metadata().map(|m| m.len()) else {
            return Ok(None);
        };
        read_large(&mut file, size, shown)
    }
}

fn read_large(
    file: &mut std::fs::File,
    size: u64,
    shown: &str,
) -> Result<Option<String>, EditorError> {
    let cannot = |e: std::io::Error| EditorError(format!("Cannot read {shown}: {e}"));
    let window = truncate::MAX_OUTPUT_CHARS as u64;
    if size <= 4 * window {
        return Ok(None);
    }
    let mut head = vec![0u8; window as usize];
    file.read_exact(&mut head).map_err(cannot)?;
    if head.iter().take(8192).any(|b| *b == 0) {
        return fail(format!(
            "{shown} is a binary file; the editor only works on text. Use a shell command to inspect it."
        ));
    }
    // Count lines as `str::lines` does: one per newline, plus an unterminated last line.
    file.seek(SeekFrom::Start(0)).map_err(cannot)?;
    let mut chunk = vec![0u8; 256 * 1024];
    let (mut newlines, mut last_byte) = (0usize, b'\n');
    loop {
        let n = file.read(&mut chunk).map_err(cannot)?;
        if n == 0 {
            break;
        }
        newlines += chunk[..n].iter().filter(|b| **b == b'\n').count();
        last_byte = chunk[n - 1];
    }
    let total = newlines + usize::from(last_byte != b'\n');
    let mut tail = vec![0u8; window as usize];
    file.seek(SeekFrom::Start(size - window)).map_err(cannot)?;
    file.read_exact(&mut tail).map_err(cannot)?;
    // Whole lines only: the head's last line and the tail's first may be cut.
    let head_text = String::from_utf8_lossy(&head);
    let head_lines: Vec<&str> = head_text.lines().collect();
    let head_lines = &head_lines[..head_lines.len().saturating_sub(1)];
    let tail_text = String::from_utf8_lossy(&tail);
    let tail_lines: Vec<&str> = tail_text.lines().skip(1).collect();
    let budget = truncate::MAX_OUTPUT_CHARS / 2;
    let mut out = format!("Here's the result of running `cat -n` on {shown}:\n");
    let mut used = 0;
    let mut shown_head = 0;
    for (i, line) in head_lines.iter().enumerate() {
        let entry = format!("{:6}\t{}\n", i + 1, line);
        if used + entry.len() > budget {
            break;
        }
        used += entry.len();
        out.push_str(&entry);
        shown_head = i + 1;
    }
    let mut ending = Vec::new();
    let mut used = 0;
    for (back, line) in tail_lines.iter().rev().enumerate() {
        let number = total - back;
        if number <= shown_head {
            break;
        }
        let entry = format!("{:6}\t{}\n", number, line);
        if used + entry.len() > budget {
            break;
        }
        used += entry.len();
        ending.push(entry);
    }
    let first_tail = total - ending.len();
    out.push_str(&format!(
        "[... {} lines omitted ...]\n",
        first_tail.saturating_sub(shown_head)
    ));
    ending.reverse();
    out.extend(ending);
    out.push_str("\n[The file is long and was cut in the middle; use view_range to see the lines you need.]\n");
    Ok(Some(out))
}

/// Numbered lines `first..=last`, keeping the output within `max` bytes: beyond it only the
/// first and last lines that fit are numbered at all, so viewing a huge file stays cheap.
fn number_lines_within(lines: &[&str], first: usize, last: usize, max: usize) -> (String, bool) {
    let range = &lines[first.saturating_sub(1).min(lines.len())..last.min(lines.len())];
    let budget = max / 2;
    let numbered = |i: usize, line: &str| format!("{:6}\t{}\n", first + i, line);
    let mut head = String::new();
    let mut used = 0;
    let mut head_count = 0;
    for (i, line) in range.iter().enumerate() {
        let entry = numbered(i, line);
        if used + entry.len() > budget && i > 0 {
            break;
        }
        used += entry.len();
        head.push_str(&entry);
        head_count = i + 1;
    }
    if head_count == range.len() {
        return (head, false);
    }
    let mut tail: Vec<String> = Vec::new();
    let mut used = 0;
    for (i, line) in range.iter().enumerate().skip(head_count).rev() {
        let entry = numbered(i, line);
        if used + entry.len() > budget {
            break;
        }
        used += entry.len();
        tail.push(entry);
    }
    tail.reverse();
    let omitted = range.len() - head_count - tail.len();
    head.push_str(&format!("[... {omitted} lines omitted ...]\n"));
    head.extend(tail);
    (head, true)
}

fn line_of(text: &str, byte: usize) -> usize {
    text[..byte].matches('\n').count()
}

/// Numbered lines around an edit that starts at line `first` (0-based) and spans `count`.
fn snippet(text: &str, first: usize, count: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let start = first.saturating_sub(SNIPPET_CONTEXT) + 1;
    let end = (first + count + SNIPPET_CONTEXT).min(lines.len());
    number_lines(&lines, start, end)
}

fn unified_diff(shown: &str, old: &str, new: &str) -> String {
    similar::TextDiff::from_lines(old, new)
        .unified_diff()
        .context_radius(3)
        .header(shown, shown)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn editor() -> (tempfile::TempDir, Editor) {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::new(dir.path().join("ws"), PathBuf::from("/workspace")).unwrap();
        (dir, Editor::new(ws))
    }

    fn edited(outcome: Result<EditorOutcome, EditorError>) -> (String, String) {
        match outcome {
            Ok(EditorOutcome::Edited { content, diff, .. }) => (content, diff),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn create_view_replace_insert_and_undo() {
        let (_d, mut ed) = editor();
        let (content, diff) = edited(ed.execute(EditorCommand::Create {
            path: "/workspace/a.py".into(),
            file_text: "x = 1\ny = 2\n".into(),
        }));
        assert!(content.contains("/workspace/a.py"));
        assert!(diff.contains("+x = 1"));
        let view = ed
            .execute(EditorCommand::View {
                path: "a.py".into(),
                view_range: None,
            })
            .unwrap();
        assert_eq!(view, EditorOutcome::Viewed {
            path: "/workspace/a.py".into(),
            content: "Here's the result of running `cat -n` on /workspace/a.py:\n     1\tx = 1\n     2\ty = 2\n\n".into(),
        });
        let (_, diff) = edited(ed.execute(EditorCommand::StrReplace {
            path: "/workspace/a.py".into(),
            old_str: "x = 1".into(),
            new_str: "x = 2".into(),
        }));
        assert_eq!(
            diff,
            "--- /workspace/a.py\n+++ /workspace/a.py\n@@ -1,2 +1,2 @@\n-x = 1\n+x = 2\n y = 2\n"
        );
        edited(ed.execute(EditorCommand::Insert {
            path: "a.py".into(),
            insert_line: 1,
            new_str: "z = 3".into(),
        }));
        let text = std::fs::read_to_string(ed.workspace().host_root().join("a.py")).unwrap();
        assert_eq!(text, "x = 2\nz = 3\ny = 2\n");
        edited(ed.execute(EditorCommand::UndoEdit {
            path: "a.py".into(),
        }));
        edited(ed.execute(EditorCommand::UndoEdit {
            path: "a.py".into(),
        }));
        let text = std::fs::read_to_string(ed.workspace().host_root().join("a.py")).unwrap();
        assert_eq!(text, "x = 1\ny = 2\n");
        let range = ed
            .execute(EditorCommand::View {
                path: "a.py".into(),
                view_range: Some((2, -1)),
            })
            .unwrap();
        assert!(
            matches!(range, EditorOutcome::Viewed { content, .. } if content.ends_with("     2\ty = 2\n\n"))
        );
    }

    #[test]
    fn ambiguous_or_missing_matches_and_bad_paths_are_refused_helpfully() {
        let (_d, mut ed) = editor();
        edited(ed.execute(EditorCommand::Create {
            path: "b.txt".into(),
            file_text: "a\na\nb\n".into(),
        }));
        let twice = ed
            .execute(EditorCommand::StrReplace {
                path: "b.txt".into(),
                old_str: "a".into(),
                new_str: "c".into(),
            })
            .unwrap_err();
        assert!(
            twice.0.contains("2 times") && twice.0.contains("lines 1, 2"),
            "{twice}"
        );
        let none = ed
            .execute(EditorCommand::StrReplace {
                path: "b.txt".into(),
                old_str: "zzz".into(),
                new_str: "c".into(),
            })
            .unwrap_err();
        assert!(none.0.contains("did not appear verbatim"));
        let exists = ed
            .execute(EditorCommand::Create {
                path: "b.txt".into(),
                file_text: "".into(),
            })
            .unwrap_err();
        assert!(exists.0.contains("already exists"));
        let outside = ed
            .execute(EditorCommand::View {
                path: "../../etc/passwd".into(),
                view_range: None,
            })
            .unwrap_err();
        assert!(outside.0.contains("outside the workspace"));
        let missing = ed
            .execute(EditorCommand::View {
                path: "nope.txt".into(),
                view_range: None,
            })
            .unwrap_err();
        assert!(missing.0.contains("does not exist"));
        let undo = ed
            .execute(EditorCommand::UndoEdit {
                path: "nope.txt".into(),
            })
            .unwrap_err();
        assert!(undo.0.contains("no edit"));
    }

    #[test]
    fn a_huge_file_view_shows_its_numbered_head_and_tail_like_a_full_read() {
        let (_d, mut ed) = editor();
        let text: String = (1..=200_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(ed.workspace().host_root().join("big.txt"), &text).unwrap();
        let EditorOutcome::Viewed { content, .. } = ed
            .execute(EditorCommand::View {
                path: "big.txt".into(),
                view_range: None,
            })
            .unwrap()
        else {
            panic!()
        };
        assert!(content.contains("     1\tline 1\n     2\tline 2\n"));
        assert!(content.contains("200000\tline 200000\n"));
        assert!(content.contains("lines omitted"));
        assert!(content.len() < 32_000, "{}", content.len());
        // The lines shown are numbered as a full read numbers them.
        let shown_tail = content
            .lines()
            .rfind(|l| l.contains("\tline "))
            .unwrap()
            .to_owned();
        assert_eq!(shown_tail, "200000\tline 200000");
        let ranged = ed
            .execute(EditorCommand::View {
                path: "big.txt".into(),
                view_range: Some((199_999, -1)),
            })
            .unwrap();
        assert!(
            matches!(ranged, EditorOutcome::Viewed { content, .. } if content.contains("199999\tline 199999\n200000\tline 200000"))
        );
    }

    #[test]
    fn a_directory_view_lists_two_levels_without_hidden_items() {
        let (_d, mut ed) = editor();
        for f in [
            "src/main.rs",
            "src/deep/er/x.rs",
            ".git/config",
            "README.md",
        ] {
            edited(ed.execute(EditorCommand::Create {
                path: f.into(),
                file_text: "x".into(),
            }));
        }
        let EditorOutcome::Viewed { content, .. } = ed
            .execute(EditorCommand::View {
                path: "/workspace".into(),
                view_range: None,
            })
            .unwrap()
        else {
            panic!()
        };
        assert!(
            content.contains("/workspace/src/main.rs\n")
                && content.contains("/workspace/src/deep/\n")
        );
        assert!(!content.contains(".git") && !content.contains("er/x.rs"));
    }
}
