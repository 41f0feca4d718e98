//! The check `cargo xtask test` runs first of all: no merge-conflict marker left in any file git
//! tracks (an unresolved merge once shipped in README.md).

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

/// Fails, naming each file and line, when a file git tracks holds a merge-conflict marker: a merge
/// resolved in a hurry can leave one in a file no compiler reads (README.md once held a whole
/// conflict). Files that are not UTF-8 text are not read.
pub fn check_conflict_markers() -> Result<()> {
    let listed = Command::new("git").args(["ls-files", "-z"]).output().context("cannot run git ls-files")?;
    if !listed.status.success() {
        bail!("git ls-files failed: {}", String::from_utf8_lossy(&listed.stderr).trim());
    }
    let mut found = Vec::new();
    for name in listed.stdout.split(|&b| b == 0).filter(|name| !name.is_empty()) {
        let path = Path::new(std::str::from_utf8(name).context("a tracked file's name is not UTF-8")?);
        // Tracked but deleted in the working tree, a submodule, a link: nothing of ours to read.
        if !std::fs::symlink_metadata(path).is_ok_and(|m| m.is_file()) {
            continue;
        }
        let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        let Ok(text) = String::from_utf8(bytes) else { continue };
        found.extend(conflict_markers(&text).into_iter().map(|line| format!("{}:{line}", path.display())));
    }
    if !found.is_empty() {
        bail!("merge-conflict markers left in tracked files (resolve them):\n  {}", found.join("\n  "));
    }
    Ok(())
}

/// The line numbers (from 1) of the merge-conflict markers in `text`: the lines git opens and
/// closes a conflict with (`<<<<<<< ` and `>>>>>>> `, each followed by the side's name), and the
/// lines that divide the sides (`=======`, and diff3's `||||||| `) between them. A lone `=======`
/// outside a conflict is not a marker: Markdown and reStructuredText underline headings with it.
fn conflict_markers(text: &str) -> Vec<usize> {
    let marker =
        |line: &str, mark: &str| line.strip_prefix(mark).is_some_and(|rest| rest.is_empty() || rest.starts_with(' '));
    let mut lines = Vec::new();
    let mut inside = false;
    for (index, line) in text.lines().enumerate() {
        let opens = marker(line, "<<<<<<<");
        let closes = marker(line, ">>>>>>>");
        let divides = line == "=======" || marker(line, "|||||||");
        if opens || closes || (inside && divides) {
            lines.push(index + 1);
        }
        inside = (inside || opens) && !closes;
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflict_markers_are_found_and_headings_are_not() {
        // Joined here: this file must not itself hold a line that starts with a marker.
        let lines = [
            "intro",
            "<<<<<<< HEAD",
            "ours",
            "||||||| base",
            "before",
            "=======",
            "theirs",
            ">>>>>>> python-plugin",
            "end",
        ];
        assert_eq!(conflict_markers(&lines.join("\n")), [2, 4, 6, 8]);
        let heading = "Title\n=======\n\ntext with <<<<<<< inside\n<<<<<<<<< nine is not git's\n";
        assert_eq!(conflict_markers(heading), Vec::<usize>::new());
        // An opening marker alone is still reported (a conflict cut short by a bad edit); bare
        // markers (no side's name) count too, and CRLF lines are read like LF ones.
        assert_eq!(conflict_markers("a\r\n<<<<<<<\r\n=======\r\nb"), [2, 3]);
        assert_eq!(conflict_markers("=======\n>>>>>>> main\n=======\n"), [2]);
    }
}
