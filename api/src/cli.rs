//! The command line: one `clap` struct per subcommand, every flag also read from the
//! environment (`REFLEDGER_*`).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::tokens::TokenSpec;

#[derive(Debug, Parser)]
#[command(name = "refledger", version, about = "The referral and credit ledger")]
pub struct Cli {
    /// How log lines are written to standard error: `text` (coloured only on a
    /// terminal) or `json` (one object per line, for a log collector).
    #[arg(
        long,
        global = true,
        env = "REFLEDGER_LOG_FORMAT",
        value_enum,
        default_value = "text"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Start the HTTP server on the embedded store.
    Serve(ServeArgs),
    /// Write the raw log as JSON Lines: payloads in base64 as stored (personal data stays
    /// ciphertext) with the hash chain, then a trailer (count, head, latest signed head),
    /// for auditors' own tools. Read-only, beside a running server.
    Export(ExportArgs),
    /// Append one ledger event (schema version 1) to a stream. For operators repairing a
    /// log: the payload must be a well-formed event, but no business rule is checked.
    Append(AppendArgs),
    /// Read events as JSON Lines: all of them, or one stream's.
    Read(ReadArgs),
    /// Verify the log's files record by record, then replay it through every projection
    /// (chain, trial balance, view invariants), read-only and beside a running server.
    /// Exits 0 intact, 1 corrupt (naming file and offset), 2 cannot read, 3 torn tail only.
    Verify(VerifyArgs),
    /// Merkle proofs over the log, read-only: that a record is in the log of a size, or
    /// that one size of the log is a prefix of another (RFC 9162), as JSON.
    Prove {
        #[command(subcommand)]
        proof: Prove,
    },
    /// Write a finance report (payouts, trial-balance, donations, commissions) from a
    /// replay of the log, as JSON or CSV.
    Report(ReportArgs),
    /// Erase a data subject offline (the server stopped): record the request, destroy the
    /// keys of their personal data, print the proof as JSON.
    Erase(EraseArgs),
    /// Copy every event of the embedded log, in order and keeping ids, into a KurrentDB
    /// cluster or another data directory, then verify counts, every event and chain heads.
    Migrate(MigrateArgs),
    /// Copy the data directory's key vault (the server stopped) into the shared key vault
    /// in PostgreSQL: keys re-wrapped under the key-encryption key, tombstones,
    /// fingerprints. Safe to run again.
    VaultMigrate(VaultMigrateArgs),
    /// Re-wrap every key of the shared key vault under a new key-encryption key, in one
    /// transaction (every instance stopped); then start them with the new KEK file and
    /// destroy the old one.
    VaultRotateKek(VaultRotateKekArgs),
    /// Benchmarks (measurements, not tests).
    Bench {
        #[command(subcommand)]
        bench: Bench,
    },
    /// Generate a deterministic, realistic history (signups, referrals, subscriptions,
    /// credits, refunds, fraud attempts, payouts, donations) into an empty data directory,
    /// or as HTTP requests to a running server.
    Simulate(SimulateArgs),
}

#[derive(Debug, Args)]
pub struct SimulateArgs {
    /// Accounts to sign up over the history.
    #[arg(
        long,
        env = "REFLEDGER_SIM_ACCOUNTS",
        required_unless_present = "summarize"
    )]
    pub accounts: Option<u32>,
    /// Simulate nothing: print the summary of the log already in --data (a server's data
    /// directory after `simulate --target`, say), read from its events alone.
    #[arg(long, requires = "data", conflicts_with = "target")]
    pub summarize: bool,
    /// Months of history, from January 2026.
    #[arg(long, env = "REFLEDGER_SIM_MONTHS", default_value_t = 6)]
    pub months: u32,
    /// The seed: the same seed and sizes give the same history (the same events, ids and
    /// times; only the encryption of personal data differs, by its random nonces).
    #[arg(long, env = "REFLEDGER_SIM_SEED", default_value_t = 42)]
    pub seed: u64,
    /// The data directory to write (must hold no events yet). Either this or --target.
    #[arg(long, env = "REFLEDGER_DATA", required_unless_present = "target")]
    pub data: Option<PathBuf>,
    /// Send the history as HTTP requests to a running server instead, e.g.
    /// `http://127.0.0.1:8080` (whose log should hold no events yet).
    #[arg(long, env = "REFLEDGER_SIM_TARGET", conflicts_with = "data")]
    pub target: Option<String>,
    /// With --target: an API token, ROLE:SECRET, for each of billing, finance, privacy
    /// and admin (as given to `serve --token`). Repeatable; comma-separated in the
    /// environment.
    #[arg(
        long,
        env = "REFLEDGER_SIM_TOKEN",
        value_delimiter = ',',
        requires = "target"
    )]
    pub token: Vec<TokenSpec>,
    /// With --target: the most requests in flight at once.
    #[arg(long, env = "REFLEDGER_SIM_CONNECTIONS", default_value_t = 32)]
    pub connections: usize,
    /// The master key of the personal-data vault, as for `serve`; `DATA/master.key`,
    /// generated on first use, when not given.
    #[arg(long, env = "REFLEDGER_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// Print the summary as JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// The log's segment size in bytes (for tests that need logs of several segments).
    #[arg(long, hide = true)]
    pub segment_size_max: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum Bench {
    /// The HTTP API on the durable file store: credits/spend and payments under
    /// concurrent connections, next to a trivial axum endpoint (the stack's ceiling).
    Api {
        /// Concurrent keep-alive connections.
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Seconds per workload per round.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Directory for the benchmark's data (a temporary directory inside it).
        #[arg(long, default_value = "target/bench")]
        dir: PathBuf,
    },
    /// The embedded file log against SQLite (WAL, synchronous=FULL), side by side.
    Store {
        /// Events in the large log that is read back and reopened.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Small workloads (and a 200,000-event log unless --events is given).
        #[arg(long)]
        quick: bool,
        /// Directory for the benchmark's logs (a temporary directory inside it).
        #[arg(long, default_value = "target/bench")]
        dir: PathBuf,
        /// A PostgreSQL database (`postgres://...`, durable, for benchmarks only) to
        /// measure `PgStore` on too.
        #[arg(long, env = "REFLEDGER_BENCH_POSTGRES")]
        postgres: Option<String>,
    },
    /// Store, projections and scaling benchmarks in one run; writes the generated section
    /// of docs/BENCHMARKS.md and the chart docs/scaling.svg.
    All {
        /// Small sizes everywhere (the store's and the projections' quick runs).
        #[arg(long)]
        quick: bool,
        /// Accounts per point of the scaling curve (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "10000,100000")]
        sizes: Vec<u32>,
        /// Months of each simulated history.
        #[arg(long, default_value_t = 6)]
        months: u32,
        /// Directory for the benchmarks' logs.
        #[arg(long, default_value = "target/bench")]
        dir: PathBuf,
        /// The Markdown file whose generated section is rewritten.
        #[arg(long, default_value = "docs/BENCHMARKS.md")]
        doc: PathBuf,
        /// Leave out the store benchmark.
        #[arg(long)]
        skip_store: bool,
        /// Leave out the projections' own benchmark.
        #[arg(long)]
        skip_projections: bool,
    },
    /// Measures one rebuild of the views from a log (run by `bench all` in a child
    /// process, so its peak memory is the rebuild's own); prints JSON.
    #[command(hide = true)]
    Rebuild {
        #[arg(long)]
        data: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The data directory, created on first run.
    #[arg(long, env = "REFLEDGER_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// The address to listen on; port 0 picks a free one (printed on start).
    #[arg(long, env = "REFLEDGER_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// An API token, ROLE:SECRET (roles: billing, finance, auditor, privacy, admin).
    /// Repeatable; comma-separated in the environment.
    #[arg(long, env = "REFLEDGER_TOKEN", value_delimiter = ',')]
    pub token: Vec<TokenSpec>,
    /// A file of ROLE:SECRET lines, used when no --token is given.
    #[arg(long, env = "REFLEDGER_TOKENS_FILE")]
    pub tokens_file: Option<PathBuf>,
    /// Load the demo data set on first run.
    #[arg(long, env = "REFLEDGER_DEMO")]
    pub demo: bool,
    /// A file holding the master key of the personal-data vault (32 bytes, base64);
    /// `DATA/master.key`, generated on first start, when not given.
    #[arg(long, env = "REFLEDGER_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// The one currency of payments, commissions and payouts (ISO 4217).
    #[arg(long, env = "REFLEDGER_CURRENCY", default_value = "EUR")]
    pub currency: String,
    /// Run on another store than the embedded log: a PostgreSQL URL
    /// (`postgres://user@host/db`) or a KurrentDB connection string
    /// (`kurrentdb://host:2113?tls=false`, `kurrentdb+discover://...`, `esdb://...`).
    /// `KURRENTDB_URL`, the older name, is read when `REFLEDGER_STORE` is not set. The data
    /// directory still holds tokens, the vault and the idempotency table.
    #[arg(long, env = "REFLEDGER_STORE")]
    pub store: Option<String>,
    /// The shared key vault, for several instances on one cluster: a PostgreSQL
    /// connection string (`postgres://user@host/db`). The data directory's vault
    /// (`DATA/vault`) when not given.
    #[arg(long, env = "REFLEDGER_KEY_VAULT_URL")]
    pub key_vault: Option<String>,
    /// With `--key-vault`: a file holding the key-encryption key (32 bytes, base64) that
    /// wraps every data key; the same file on every instance, never in the database.
    #[arg(long, env = "REFLEDGER_KEY_VAULT_KEK_FILE")]
    pub key_vault_kek_file: Option<PathBuf>,
    /// With `--key-vault ...?sslmode=require`: the CA certificates (PEM) that sign the
    /// database's certificate, instead of the system's roots.
    #[arg(long, env = "REFLEDGER_KEY_VAULT_CA_FILE")]
    pub key_vault_ca_file: Option<PathBuf>,
    /// A file holding the key (32 bytes) of the server's keyed hashes, such as the account
    /// id derived from a signup's `Idempotency-Key`: the same file on every instance behind
    /// one load balancer, so a retry derives the same id wherever it lands. It must exist.
    /// `DATA/fingerprint.key`, generated on first start, when not given.
    #[arg(long, env = "REFLEDGER_FINGERPRINT_KEY_FILE")]
    pub fingerprint_key_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VaultRotateKekArgs {
    /// The shared vault: a PostgreSQL connection string.
    #[arg(long, env = "REFLEDGER_KEY_VAULT_URL")]
    pub key_vault: String,
    /// The current key-encryption key file.
    #[arg(long, env = "REFLEDGER_KEY_VAULT_KEK_FILE")]
    pub key_vault_kek_file: PathBuf,
    /// The new key-encryption key file (32 bytes, base64).
    #[arg(long)]
    pub new_kek_file: PathBuf,
    /// The database's CA certificates (PEM), as for `serve`.
    #[arg(long, env = "REFLEDGER_KEY_VAULT_CA_FILE")]
    pub key_vault_ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VaultMigrateArgs {
    /// The data directory whose vault (`DATA/vault`) is copied.
    #[arg(long, env = "REFLEDGER_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// The data directory vault's master key file; `DATA/master.key` when not given.
    #[arg(long, env = "REFLEDGER_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// The shared vault to copy into: a PostgreSQL connection string.
    #[arg(long, env = "REFLEDGER_KEY_VAULT_URL")]
    pub to: String,
    /// The shared vault's key-encryption key file (32 bytes, base64).
    #[arg(long, env = "REFLEDGER_KEY_VAULT_KEK_FILE")]
    pub key_vault_kek_file: PathBuf,
    /// The database's CA certificates (PEM), as for `serve`.
    #[arg(long, env = "REFLEDGER_KEY_VAULT_CA_FILE")]
    pub key_vault_ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The data directory whose embedded log is copied (the server must not be running).
    #[arg(long, env = "REFLEDGER_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// Where to copy it: a PostgreSQL URL, a KurrentDB connection string, or another data
    /// directory.
    #[arg(long)]
    pub to: String,
}

#[derive(Debug, Args)]
pub struct DataArgs {
    /// The data directory.
    #[arg(long, env = "REFLEDGER_DATA", default_value = "./data")]
    pub data: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Prove {
    /// That the record at --position is in the log of --size records.
    Inclusion {
        #[arg(long, env = "REFLEDGER_DATA", default_value = "./data")]
        data: PathBuf,
        #[arg(long)]
        position: u64,
        /// The tree's size (a signed head's `events`); the whole log when not given.
        #[arg(long)]
        size: Option<u64>,
    },
    /// That the log of --from records is a prefix of the log of --to records.
    Consistency {
        #[arg(long, env = "REFLEDGER_DATA", default_value = "./data")]
        data: PathBuf,
        #[arg(long)]
        from: u64,
        /// The larger size; the whole log when not given.
        #[arg(long)]
        to: Option<u64>,
    },
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The data directory (opened read-only: nothing in it is written).
    #[arg(long, env = "REFLEDGER_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// A file of signed heads kept outside the data directory: one head as `GET
    /// /v1/heads/latest` serves it, a page of `GET /v1/heads`, a JSON array or one head
    /// per line. Verify fails unless the log extends every one. Repeatable.
    #[arg(long)]
    pub trusted_head: Vec<PathBuf>,
    /// Fail unless a signed head (trusted, or kept by the server, which signs its last
    /// head on shutdown) covers every record: for a log handed over for audit, where a
    /// record past the last signed head was appended by someone else.
    #[arg(long)]
    pub signed_to_end: bool,
    /// Check this export (`refledger export`) instead of the data directory: every
    /// event's hash and link, the trailer's count and head, its signed head and every
    /// --trusted-head.
    #[arg(long)]
    pub export: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The data directory.
    #[arg(long, env = "REFLEDGER_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// Where to write; standard output when not given.
    #[arg(long, env = "REFLEDGER_OUTPUT")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AppendArgs {
    /// The data directory.
    #[arg(long, env = "REFLEDGER_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// The stream to append to.
    #[arg(long, env = "REFLEDGER_STREAM")]
    pub stream: String,
    /// The event's type, e.g. `NoteAdded`.
    #[arg(long, env = "REFLEDGER_EVENT_TYPE")]
    pub event_type: String,
    /// The payload; standard input when not given.
    #[arg(long, env = "REFLEDGER_PAYLOAD")]
    pub payload: Option<String>,
    /// The revision the stream's last event must have (optimistic concurrency).
    #[arg(long, env = "REFLEDGER_EXPECTED_REVISION")]
    pub expected_revision: Option<u64>,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    /// The data directory.
    #[arg(long, env = "REFLEDGER_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// One stream; all events in global order when not given.
    #[arg(long, env = "REFLEDGER_STREAM")]
    pub stream: Option<String>,
    /// Where to start: a revision with --stream, else a global position.
    #[arg(long, env = "REFLEDGER_FROM", default_value_t = 0)]
    pub from: u64,
    /// Most events to print.
    #[arg(long, env = "REFLEDGER_LIMIT", default_value_t = 100)]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct EraseArgs {
    /// The data directory.
    #[arg(long, env = "REFLEDGER_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// The account (data subject) to erase.
    #[arg(long)]
    pub account: uuid::Uuid,
    /// The privacy officer's id for the request: running it again changes nothing.
    #[arg(long)]
    pub request_id: uuid::Uuid,
    /// The vault's master key file; `DATA/master.key` when not given.
    #[arg(long, env = "REFLEDGER_MASTER_KEY_FILE")]
    pub master_key_file: Option<PathBuf>,
    /// The shared key vault, as for `serve`.
    #[arg(long, env = "REFLEDGER_KEY_VAULT_URL")]
    pub key_vault: Option<String>,
    /// The shared key vault's key-encryption key file, as for `serve`.
    #[arg(long, env = "REFLEDGER_KEY_VAULT_KEK_FILE")]
    pub key_vault_kek_file: Option<PathBuf>,
    /// With `--key-vault ...?sslmode=require`: the CA certificates (PEM) that sign the
    /// database's certificate, instead of the system's roots.
    #[arg(long, env = "REFLEDGER_KEY_VAULT_CA_FILE")]
    pub key_vault_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportKind {
    /// Who is owed or was paid what for `--period`.
    Payouts,
    /// Debits and credits per account, now or `--as-of` an instant or position.
    TrialBalance,
    /// Donations of `--period`, in aggregate.
    Donations,
    /// The commission statement of `--affiliate-id` for `--period`.
    Commissions,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormatArg {
    Json,
    Csv,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Which report.
    #[arg(value_enum)]
    pub kind: ReportKind,
    /// The data directory.
    #[arg(long, env = "REFLEDGER_DATA", default_value = "./data")]
    pub data: PathBuf,
    /// The calendar month, YYYY-MM (payouts, donations, commissions).
    #[arg(long)]
    pub period: Option<String>,
    /// An RFC 3339 instant or a log position (trial-balance).
    #[arg(long)]
    pub as_of: Option<String>,
    /// The affiliate's account id (commissions).
    #[arg(long)]
    pub affiliate_id: Option<String>,
    #[arg(long, value_enum, default_value = "json")]
    pub format: ReportFormatArg,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    /// The README and docs/API.md both name every subcommand `refledger --help` lists
    /// (and `bench`'s), so neither falls behind the binary.
    #[test]
    fn the_readme_and_the_api_document_name_every_subcommand() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
        let api = std::fs::read_to_string(root.join("docs/API.md")).unwrap();
        let cli = super::Cli::command();
        let mut names = Vec::new();
        for command in cli
            .get_subcommands()
            .filter(|command| !command.is_hide_set())
        {
            names.push(command.get_name().to_owned());
            for nested in command
                .get_subcommands()
                .filter(|nested| !nested.is_hide_set())
            {
                names.push(format!("{} {}", command.get_name(), nested.get_name()));
            }
        }
        assert!(names.len() > 12, "{names:?}");
        for name in names {
            // `bench store` may be written `bench store`, within one code span.
            let leaf = name.rsplit(' ').next().unwrap();
            for (document, text) in [("README.md", &readme), ("docs/API.md", &api)] {
                let named = text.contains(&format!("`{name}"))
                    || text.contains(&format!("`{leaf}`"))
                    || text.contains(&format!("`bench {leaf}"));
                assert!(named, "{document} does not name `{name}`");
            }
        }
    }
}
