//! Microagents: what a repository (and the user) tells the agent in files. The repository's
//! `.openhands/microagents/repo.md`, `AGENTS.md` / `agents.md` and `.cursorrules` are always
//! said at the start; knowledge microagents (`.openhands/microagents/**/*.md` with `triggers` in
//! their front matter, and the same in the user's own folder) are said when a user message names
//! one of their trigger words. Workspace files are read through the workspace's handle, so a
//! link the agent planted cannot lead ohd outside it; each file is read up to a size.

use ohd_runtime::workspace::Workspace;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The most of one file that is read, and the most files looked at.
const MAX_FILE_BYTES: u64 = 64 * 1024;
const MAX_FILES: usize = 200;
const MAX_DEPTH: usize = 4;

#[derive(Debug, Clone, PartialEq)]
pub struct Knowledge {
    pub name: String,
    pub triggers: Vec<String>,
    pub content: String,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Microagents {
    /// Always said: the repository's instructions, in a stable order.
    pub instructions: Vec<(String, String)>,
    pub knowledge: Vec<Knowledge>,
}

impl Microagents {
    /// The repository's instructions as one text.
    pub fn repo_instructions(&self) -> String {
        self.instructions
            .iter()
            .map(|(_, text)| text.trim())
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join("\n\n")
    }

    /// The knowledge whose trigger words `message` contains (case-insensitively), with the
    /// trigger that matched, leaving out the names in `already`.
    pub fn triggered<'a>(
        &'a self,
        message: &str,
        already: &[String],
    ) -> Vec<(&'a Knowledge, &'a str)> {
        let lower = message.to_lowercase();
        self.knowledge
            .iter()
            .filter(|k| !already.contains(&k.name))
            .filter_map(|k| {
                k.triggers
                    .iter()
                    .find(|t| !t.is_empty() && lower.contains(&t.to_lowercase()))
                    .map(|t| (k, t.as_str()))
            })
            .collect()
    }
}

/// Loads the microagents of the repository at `base` in `workspace` (`.` for the workspace
/// itself) and of the user's folder `user_dir`.
pub fn load(workspace: &Workspace, base: &Path, user_dir: Option<&Path>) -> Microagents {
    let mut found = Microagents::default();
    let read_ws = |rel: &Path| -> Option<String> {
        let file = workspace.open_read(rel).ok()?;
        if !file.metadata().ok()?.is_file() {
            return None;
        }
        let mut text = String::new();
        file.take(MAX_FILE_BYTES).read_to_string(&mut text).ok()?;
        Some(text)
    };
    for name in [
        ".openhands/microagents/repo.md",
        "AGENTS.md",
        "agents.md",
        ".cursorrules",
    ] {
        if let Some(text) = read_ws(&base.join(name)) {
            let (front, body) = front_matter(&text);
            // `AGENTS.md` and `agents.md` are one file on a case-insensitive disk.
            if !found.instructions.iter().any(|(_, t)| *t == body) {
                let _ = front;
                found.instructions.push((name.to_owned(), body));
            }
        }
    }
    let mut files = Vec::new();
    walk_workspace(
        workspace,
        &base.join(".openhands/microagents"),
        0,
        &mut files,
    );
    for rel in files {
        if rel == base.join(".openhands/microagents/repo.md") {
            continue;
        }
        if let Some(text) = read_ws(&rel) {
            add(&mut found, &rel, &text);
        }
    }
    if let Some(dir) = user_dir {
        let mut files = Vec::new();
        walk_host(dir, 0, &mut files);
        for path in files {
            let text = std::fs::File::open(&path).ok().and_then(|file| {
                let mut text = String::new();
                file.take(MAX_FILE_BYTES).read_to_string(&mut text).ok()?;
                Some(text)
            });
            if let Some(text) = text {
                add(&mut found, &path, &text);
            }
        }
    }
    found
}

/// A microagent file: knowledge when it has triggers, an instruction otherwise.
fn add(found: &mut Microagents, path: &Path, text: &str) {
    let (front, body) = front_matter(text);
    let name = front
        .as_deref()
        .and_then(|f| scalar(f, "name"))
        .unwrap_or_else(|| {
            path.file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default()
        });
    let triggers = front.as_deref().map(triggers).unwrap_or_default();
    if triggers.is_empty() {
        found.instructions.push((path.display().to_string(), body));
    } else {
        found.knowledge.push(Knowledge {
            name,
            triggers,
            content: body,
        });
    }
}

fn walk_workspace(workspace: &Workspace, rel: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH || out.len() >= MAX_FILES {
        return;
    }
    let Ok(entries) = workspace.dir().read_dir(rel) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = rel.join(entry.file_name());
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => walk_workspace(workspace, &path, depth + 1, out),
            Ok(kind) if kind.is_file() && path.extension().is_some_and(|e| e == "md") => {
                out.push(path)
            }
            _ => {}
        }
        if out.len() >= MAX_FILES {
            return;
        }
    }
}

fn walk_host(dir: &Path, depth: usize, out: &mut Vec<PathBuf>) {
    if depth > MAX_DEPTH || out.len() >= MAX_FILES {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<_> = entries.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        match entry.file_type() {
            Ok(kind) if kind.is_dir() => walk_host(&path, depth + 1, out),
            Ok(kind) if kind.is_file() && path.extension().is_some_and(|e| e == "md") => {
                out.push(path)
            }
            _ => {}
        }
        if out.len() >= MAX_FILES {
            return;
        }
    }
}

/// Splits a `---`-fenced front matter from the body.
fn front_matter(text: &str) -> (Option<String>, String) {
    let trimmed = text.trim_start_matches('\u{feff}');
    if let Some(rest) = trimmed
        .strip_prefix("---\n")
        .or_else(|| trimmed.strip_prefix("---\r\n"))
        && let Some(end) = rest.find("\n---")
    {
        let front = rest[..end].to_owned();
        let after = &rest[end + 4..];
        let body = after.split_once('\n').map_or("", |(_, b)| b);
        return (Some(front), body.trim().to_owned());
    }
    (None, trimmed.trim().to_owned())
}

// The front matter is read by hand, for the two keys that matter (`name`, `triggers`): a YAML
// library would be a large dependency for a few lines that microagents write in one of two
// forms (`triggers: [a, b]` or a `- item` list under `triggers:`).

fn unquote(value: &str) -> String {
    value
        .trim()
        .trim_matches(|c| c == '"' || c == '\'')
        .trim()
        .to_owned()
}

fn scalar(front: &str, key: &str) -> Option<String> {
    front.lines().find_map(|line| {
        line.strip_prefix(key)
            .and_then(|rest| rest.trim_start().strip_prefix(':'))
            .map(unquote)
            .filter(|v| !v.is_empty())
    })
}

fn triggers(front: &str) -> Vec<String> {
    let mut lines = front.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line
            .strip_prefix("triggers")
            .and_then(|r| r.trim_start().strip_prefix(':'))
        else {
            continue;
        };
        let rest = rest.trim();
        if let Some(inline) = rest.strip_prefix('[') {
            return inline
                .trim_end_matches(']')
                .split(',')
                .map(unquote)
                .filter(|t| !t.is_empty())
                .collect();
        }
        let mut list = Vec::new();
        while let Some(item) = lines.peek().and_then(|l| l.trim_start().strip_prefix("- ")) {
            list.push(unquote(item));
            lines.next();
        }
        return list.into_iter().filter(|t| !t.is_empty()).collect();
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn front_matter_in_both_list_forms() {
        let (front, body) = front_matter(
            "---\nname: docker\ntype: knowledge\ntriggers:\n  - docker\n  - \"container\"\n---\nUse compose.\n",
        );
        let front = front.unwrap_or_default();
        assert_eq!(triggers(&front), ["docker", "container"]);
        assert_eq!(scalar(&front, "name").as_deref(), Some("docker"));
        assert_eq!(body, "Use compose.");
        let (front, _) = front_matter("---\ntriggers: [yarn, 'npm']\n---\nbody");
        assert_eq!(triggers(&front.unwrap_or_default()), ["yarn", "npm"]);
        assert_eq!(front_matter("no front matter").1, "no front matter");
    }

    #[test]
    fn triggers_match_words_case_insensitively_once() {
        let agents = Microagents {
            instructions: Vec::new(),
            knowledge: vec![Knowledge {
                name: "docker".into(),
                triggers: vec!["Docker".into()],
                content: "c".into(),
            }],
        };
        assert_eq!(agents.triggered("build the DOCKER image", &[]).len(), 1);
        assert!(agents.triggered("build it", &[]).is_empty());
        assert!(agents.triggered("docker", &["docker".into()]).is_empty());
    }
}
