//! `bext import [DIR]`: detect a Phoenix project and write the bext config for
//! it. `detect` reads the project tree; `generate` writes the config text and
//! the Phoenix-side checklist.

mod detect;
mod generate;

use std::path::{Path, PathBuf};

pub use detect::{detect, DetectError, PhoenixProject, WebServer};
pub use generate::{checklist, config};

pub const CONFIG_NAME: &str = "bext.config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Detect(#[from] DetectError),
    #[error("{0} already exists; use --force to overwrite it or --stdout to print the config")]
    Exists(PathBuf),
    #[error("{path}: cannot write: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// What `import` did.
#[derive(Debug)]
pub struct Imported {
    pub project: PhoenixProject,
    pub config: String,
    /// Where the config was written (`None` with `--stdout`).
    pub written: Option<PathBuf>,
}

pub fn import(dir: &Path, force: bool, to_stdout: bool) -> Result<Imported, ImportError> {
    let project = detect(dir)?;
    let text = config(&project);
    if to_stdout {
        return Ok(Imported {
            project,
            config: text,
            written: None,
        });
    }
    let path = dir.join(CONFIG_NAME);
    if path.exists() && !force {
        return Err(ImportError::Exists(path));
    }
    std::fs::write(&path, &text).map_err(|source| ImportError::Write {
        path: path.clone(),
        source,
    })?;
    Ok(Imported {
        project,
        config: text,
        written: Some(path),
    })
}
