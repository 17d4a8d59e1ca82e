//! Which key vault a command uses: the data directory's (`DirVault`, the default, one
//! instance) or the shared one in PostgreSQL (`--key-vault postgres://...`, several
//! instances on one KurrentDB cluster), and `refledger vault-migrate`, which copies the
//! first into the second.

use std::path::Path;
use std::sync::Arc;

use ledger::privacy::KeyVault;
#[cfg(feature = "pg-vault")]
use ledger::privacy::MasterKey;

use crate::cli::{VaultMigrateArgs, VaultRotateKekArgs};
use crate::server::ServeError;

/// Where the vault is, as the flags of `serve` and `erase` say.
#[derive(Clone, Copy, Debug)]
pub struct VaultFlags<'a> {
    pub data: &'a Path,
    /// `--master-key-file`: the directory vault's master key.
    pub master_key_file: Option<&'a Path>,
    /// `--key-vault`: the shared vault's connection string.
    pub key_vault: Option<&'a str>,
    /// `--key-vault-kek-file`: the shared vault's key-encryption key.
    pub key_vault_kek_file: Option<&'a Path>,
    /// `--key-vault-ca-file`: the database's CA, for TLS.
    pub key_vault_ca_file: Option<&'a Path>,
}

/// Opens the vault the flags name. With `create`, a data directory vault and its master
/// key are created on first use; the shared vault creates its tables on first connect.
pub fn open_vault(flags: VaultFlags<'_>, create: bool) -> Result<Arc<dyn KeyVault>, ServeError> {
    match flags.key_vault {
        None => crate::server::open_data_vault(flags.data, flags.master_key_file, create),
        Some(url) => {
            if flags.master_key_file.is_some() {
                tracing::warn!(
                    "--master-key-file is not used with --key-vault: the shared vault's keys \
                     are wrapped by --key-vault-kek-file"
                );
            }
            let kek_file = flags.key_vault_kek_file.ok_or_else(|| {
                ServeError::Config(
                    "--key-vault needs --key-vault-kek-file (REFLEDGER_KEY_VAULT_KEK_FILE): the \
                     key-encryption key, the same file on every instance"
                        .to_owned(),
                )
            })?;
            open_shared_vault(url, kek_file, flags.key_vault_ca_file)
        }
    }
}

/// The shared vault at `url`, its keys wrapped by the key-encryption key in `kek_file`.
#[cfg(feature = "pg-vault")]
pub fn open_shared_vault(
    url: &str,
    kek_file: &Path,
    ca_file: Option<&Path>,
) -> Result<Arc<dyn KeyVault>, ServeError> {
    Ok(Arc::new(connect_pg(url, kek_file, ca_file)?))
}

#[cfg(not(feature = "pg-vault"))]
pub fn open_shared_vault(
    _url: &str,
    _kek_file: &Path,
    _ca_file: Option<&Path>,
) -> Result<Arc<dyn KeyVault>, ServeError> {
    Err(ServeError::Config(
        "--key-vault: this refledger was built without the pg-vault feature".to_owned(),
    ))
}

#[cfg(feature = "pg-vault")]
fn connect_pg(
    url: &str,
    kek_file: &Path,
    ca_file: Option<&Path>,
) -> Result<ledger::privacy::vault::pg::PgVault, ServeError> {
    let config = |error: ledger::privacy::PrivacyError| ServeError::Config(error.to_string());
    let kek = MasterKey::from_file(kek_file).map_err(config)?;
    let vault =
        ledger::privacy::vault::pg::PgVault::connect_with_ca(url, kek, ca_file).map_err(config)?;
    tracing::info!("key vault: PostgreSQL (shared)");
    Ok(vault)
}

/// What `vault-migrate` copied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VaultMigrateReport {
    pub keys_copied: usize,
    pub keys_present: usize,
    pub tombstones_copied: usize,
    pub fingerprints_copied: usize,
}

/// `refledger vault-migrate`: copies the data directory's vault (the server stopped: the
/// vault is locked while it runs) into the shared vault at `--to`, keys re-wrapped under
/// the key-encryption key. Safe to run again; it refuses to mix in another log's keys.
#[cfg(feature = "pg-vault")]
pub fn run_vault_migrate(args: &VaultMigrateArgs) -> Result<VaultMigrateReport, ServeError> {
    let config = |error: ledger::privacy::PrivacyError| ServeError::Config(error.to_string());
    let master = match &args.master_key_file {
        Some(path) => MasterKey::from_file(path),
        None => MasterKey::from_file(&args.data.join(crate::server::MASTER_KEY_FILE_NAME)),
    }
    .map_err(config)?;
    let vault_dir = args.data.join(crate::server::VAULT_DIR_NAME);
    if !vault_dir.join("vault.json").exists() {
        return Err(ServeError::Config(format!(
            "no key vault in {}: nothing to migrate",
            vault_dir.display()
        )));
    }
    let source = ledger::privacy::DirVault::open(vault_dir, master).map_err(config)?;
    let contents = source.contents().map_err(config)?;
    let target = connect_pg(
        &args.to,
        &args.key_vault_kek_file,
        args.key_vault_ca_file.as_deref(),
    )?;
    let report = target.import(&contents).map_err(config)?;
    Ok(VaultMigrateReport {
        keys_copied: report.keys_copied,
        keys_present: report.keys_present,
        tombstones_copied: report.tombstones_copied,
        fingerprints_copied: report.fingerprints_copied,
    })
}

#[cfg(not(feature = "pg-vault"))]
pub fn run_vault_migrate(_args: &VaultMigrateArgs) -> Result<VaultMigrateReport, ServeError> {
    Err(ServeError::Config(
        "vault-migrate: this refledger was built without the pg-vault feature".to_owned(),
    ))
}

/// `refledger vault-rotate-kek`: the number of keys re-wrapped under the new KEK.
#[cfg(feature = "pg-vault")]
pub fn run_vault_rotate_kek(args: &VaultRotateKekArgs) -> Result<usize, ServeError> {
    let config = |error: ledger::privacy::PrivacyError| ServeError::Config(error.to_string());
    let new = MasterKey::from_file(&args.new_kek_file).map_err(config)?;
    let vault = connect_pg(
        &args.key_vault,
        &args.key_vault_kek_file,
        args.key_vault_ca_file.as_deref(),
    )?;
    let report = vault.rotate_kek(&new).map_err(config)?;
    Ok(report.keys_rewrapped)
}

#[cfg(not(feature = "pg-vault"))]
pub fn run_vault_rotate_kek(_args: &VaultRotateKekArgs) -> Result<usize, ServeError> {
    Err(ServeError::Config(
        "vault-rotate-kek: this refledger was built without the pg-vault feature".to_owned(),
    ))
}
