//! What the server exposes, decided before it opens the store: TLS, the
//! token file, whether the listening address may be reached from other
//! machines without them, and the data directory's mode.
//!
//! The rule for the address: a loopback address (the default, 127.0.0.1)
//! is reachable only from this machine, so plain text and no tokens are
//! fine there. Any other address needs TLS *and* a token file, or
//! `--allow-insecure-remote`, which is logged as a warning.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use tonic::transport::{Identity, Server, ServerTlsConfig};

use crate::auth::Tokens;
use crate::config::Config;

/// The TLS setup and tokens of a server, read and checked.
#[derive(Debug)]
pub struct Security {
    pub tls: Option<ServerTlsConfig>,
    pub tokens: Option<Arc<Tokens>>,
}

impl Security {
    /// Reads the TLS files and the token file the config names and checks
    /// the address rule. Each error is one line saying what to change.
    pub fn load(config: &Config) -> Result<Security, String> {
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => {
                let read = |flag: &str, path: &Path| {
                    std::fs::read(path).map_err(|e| format!("cannot read {flag} {}: {e}", path.display()))
                };
                let identity = Identity::from_pem(read("--tls-cert", cert)?, read("--tls-key", key)?);
                let tls = ServerTlsConfig::new().identity(identity);
                // Parse the files now, not after the store is opened.
                Server::builder().tls_config(tls.clone()).map_err(|e| {
                    format!("cannot use --tls-cert {} and --tls-key {}: {e}", cert.display(), key.display())
                })?;
                Some(tls)
            }
            (None, None) => None,
            _ => return Err("--tls-cert and --tls-key go together: give both or neither".to_string()),
        };
        let tokens = match &config.token_file {
            Some(path) => {
                let tokens = Tokens::load(path)?;
                warn_if_shared(path, "the token file");
                Some(Arc::new(tokens))
            }
            None => None,
        };
        let security = Security { tls, tokens };
        security.check_address(config)?;
        Ok(security)
    }

    /// Refuses a non-loopback address without TLS and tokens, unless
    /// `--allow-insecure-remote` says so (then warns).
    fn check_address(&self, config: &Config) -> Result<(), String> {
        if config.host.is_loopback() || (self.tls.is_some() && self.tokens.is_some()) {
            return Ok(());
        }
        let missing = match (self.tls.is_some(), self.tokens.is_some()) {
            (false, false) => "TLS (--tls-cert, --tls-key) and a --token-file",
            (false, true) => "TLS (--tls-cert, --tls-key)",
            _ => "a --token-file",
        };
        if !config.allow_insecure_remote {
            return Err(format!(
                "refusing to listen on {} without {missing}: anyone who reaches the port could read and write \
                 everything. Add them, listen on 127.0.0.1, or pass --allow-insecure-remote \
                 (LSE_ALLOW_INSECURE_REMOTE=true) if the network is trusted",
                config.host
            ));
        }
        tracing::warn!(
            host = %config.host,
            "insecure remote access: listening on a non-loopback address without {missing} \
             (--allow-insecure-remote)"
        );
        Ok(())
    }
}

/// Creates the data directory, and any missing parent, with mode 0700
/// (only the server's user may enter it). An existing directory is left as
/// it is, with a warning if other users may read it.
pub fn create_data_dir(dir: &Path) -> std::io::Result<()> {
    match std::fs::metadata(dir) {
        Ok(_) => {
            warn_if_shared(dir, "the data directory");
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
        }
        Err(e) => Err(e),
    }
}

/// Warns when `path` is readable by its group or by other users.
fn warn_if_shared(path: &Path, what: &str) {
    if let Ok(metadata) = std::fs::metadata(path) {
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            tracing::warn!(
                path = %path.display(),
                mode = format!("{mode:o}"),
                "{what} is open to other users; chmod go-rwx it"
            );
        }
    }
}
