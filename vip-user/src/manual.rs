//! Shell completions and man pages, generated from a binary's clap definition so they
//! always match its `--help`. `vipd completions SHELL` and `vipctl completions SHELL`
//! print a completion script; `vipd man DIR` and `vipctl man DIR` write the binary's man
//! pages (one per command and subcommand); `cargo xtask install` puts both where shells
//! and `man` look for them.

use std::path::{Path, PathBuf};

pub use clap_complete::Shell;

/// The completion script of `cmd` for `shell` (built in memory: clap_complete panics
/// when its writer fails, and a closed pipe on stdout is not a reason to panic).
pub fn completions(mut cmd: clap::Command, shell: Shell) -> String {
    let name = cmd.get_name().to_string();
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut cmd, name, &mut out);
    String::from_utf8(out).expect("completion scripts are UTF-8")
}

/// Why the man pages could not be written.
#[derive(Debug, thiserror::Error)]
#[error("writing man pages into {}: {source}", dir.display())]
pub struct ManError {
    /// The directory.
    pub dir: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Writes the man pages of `cmd` into `dir` (created if missing): `NAME.1` and one
/// `NAME-SUBCOMMAND.1` per subcommand, nested ones included. Returns the files written.
pub fn man_pages(cmd: clap::Command, dir: &Path) -> Result<Vec<PathBuf>, ManError> {
    let err = |source| ManError {
        dir: dir.to_owned(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(err)?;
    let name = cmd.get_name().to_string();
    clap_mangen::generate_to(cmd, dir).map_err(err)?;
    let mut pages: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(err)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| {
            let file = p.file_name().unwrap_or_default().to_string_lossy();
            file == format!("{name}.1")
                || (file.starts_with(&format!("{name}-")) && file.ends_with(".1"))
        })
        .collect();
    pages.sort();
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::cli::Cli;

    #[test]
    fn completions_name_every_subcommand() {
        let text = completions(Cli::command(), Shell::Bash);
        for word in ["vipctl", "backend", "drain", "trace", "stats"] {
            assert!(
                text.contains(word),
                "{word} missing from the bash completions"
            );
        }
    }

    #[test]
    fn man_pages_cover_the_command_and_its_subcommands() {
        let dir = std::env::temp_dir().join(format!("vip-man-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let pages = man_pages(Cli::command(), &dir).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for want in [
            "vipctl.1",
            "vipctl-backend.1",
            "vipctl-backend-drain.1",
            "vipctl-trace.1",
        ] {
            assert!(names.iter().any(|n| n == want), "{want} not in {names:?}");
        }
        let page = std::fs::read_to_string(dir.join("vipctl-backend-drain.1")).unwrap();
        assert!(page.contains(".TH"), "not a man page:\n{page}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
