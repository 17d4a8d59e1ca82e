//! API tokens: which secret belongs to which role, where they come from, and how a
//! presented secret is checked.
//!
//! Secrets are kept only as SHA-256 digests in memory and compared in constant time, so
//! neither a timing side channel nor a memory dump of the token table gives them away.
//! When the operator gives none, one random secret per role is generated on first start
//! and written to `<data>/tokens` with mode 0600, in the same `role:secret` lines that
//! `--token` and `--tokens-file` take.

use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use sha2::{Digest as _, Sha256};

/// Shortest secret accepted: anything shorter can be guessed.
pub const SECRET_LENGTH_MIN: usize = 16;
/// Longest secret accepted.
pub const SECRET_LENGTH_MAX: usize = 256;
/// Most secrets configured at once.
pub const TOKENS_MAX: usize = 64;
/// Random bytes in a generated secret (written as twice as many hex digits).
pub const GENERATED_SECRET_BYTES: usize = 32;
/// The file, in the data directory, that generated secrets are written to.
pub const TOKENS_FILE_NAME: &str = "tokens";

const _: () = assert!(GENERATED_SECRET_BYTES * 2 >= SECRET_LENGTH_MIN);
const _: () = assert!(GENERATED_SECRET_BYTES * 2 <= SECRET_LENGTH_MAX);

/// Who is calling: each endpoint admits some roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// The billing service: commands and balances.
    Billing,
    /// Finance: reports and payout runs.
    Finance,
    /// Auditors: events, streams, reports, verification; never personal data.
    Auditor,
    /// The privacy officer: erasure, export, personal data.
    Privacy,
    /// Administrators: commission plans.
    Admin,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Billing,
        Role::Finance,
        Role::Auditor,
        Role::Privacy,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Billing => "billing",
            Role::Finance => "finance",
            Role::Auditor => "auditor",
            Role::Privacy => "privacy",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = TokenError;
    fn from_str(name: &str) -> Result<Role, TokenError> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == name)
            .ok_or_else(|| TokenError::UnknownRole {
                name: name.to_owned(),
            })
    }
}

/// Why a token could not be configured.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("unknown role {name:?}; the roles are billing, finance, auditor, privacy, admin")]
    UnknownRole { name: String },
    #[error("a token must read ROLE:SECRET, e.g. billing:0123456789abcdef")]
    MissingSeparator,
    #[error(
        "the secret for role {role} must be {SECRET_LENGTH_MIN} to {SECRET_LENGTH_MAX} \
         printable ASCII characters without spaces"
    )]
    BadSecret { role: Role },
    #[error("at most {TOKENS_MAX} tokens may be configured")]
    TooMany,
    #[error("{path}, line {line}: {source}")]
    InFile {
        path: PathBuf,
        line: usize,
        #[source]
        source: Box<TokenError>,
    },
    #[error("{context} {path}: {source}")]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
}

/// One configured token: a role and its secret, as given on the command line.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSpec {
    role: Role,
    secret: String,
}

impl TokenSpec {
    pub fn new(role: Role, secret: impl Into<String>) -> Result<TokenSpec, TokenError> {
        let secret = secret.into();
        let printable = secret.bytes().all(|byte| byte.is_ascii_graphic());
        if !(SECRET_LENGTH_MIN..=SECRET_LENGTH_MAX).contains(&secret.len()) || !printable {
            return Err(TokenError::BadSecret { role });
        }
        Ok(TokenSpec { role, secret })
    }

    pub fn role(&self) -> Role {
        self.role
    }

    pub fn secret(&self) -> &str {
        &self.secret
    }
}

impl FromStr for TokenSpec {
    type Err = TokenError;
    fn from_str(text: &str) -> Result<TokenSpec, TokenError> {
        let (role, secret) = text.split_once(':').ok_or(TokenError::MissingSeparator)?;
        TokenSpec::new(role.trim().parse()?, secret.trim())
    }
}

// Secrets never appear in logs or panics.
impl fmt::Debug for TokenSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TokenSpec({}:<secret>)", self.role)
    }
}

/// The table the server checks presented secrets against.
#[derive(Clone)]
pub struct Tokens {
    digests: Vec<(Role, [u8; 32])>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let roles: Vec<Role> = self.digests.iter().map(|(role, _)| *role).collect();
        f.debug_struct("Tokens").field("roles", &roles).finish()
    }
}

impl Tokens {
    pub fn new(specs: &[TokenSpec]) -> Result<Tokens, TokenError> {
        if specs.len() > TOKENS_MAX {
            return Err(TokenError::TooMany);
        }
        Ok(Tokens {
            digests: specs
                .iter()
                .map(|spec| (spec.role, digest(spec.secret.as_bytes())))
                .collect(),
        })
    }

    /// The role of `secret`, if it is a configured one. Every configured digest is
    /// compared, in constant time, whichever matches: the time taken says nothing about
    /// the secret.
    pub fn role_of(&self, secret: &[u8]) -> Option<Role> {
        let presented = digest(secret);
        let mut found = None;
        for (role, expected) in &self.digests {
            if constant_time_eq(&presented, expected) {
                found = found.or(Some(*role));
            }
        }
        found
    }

    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }
}

fn digest(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(left: &[u8; 32], right: &[u8; 32]) -> bool {
    let difference = left
        .iter()
        .zip(right)
        .fold(0u8, |acc, (l, r)| acc | (l ^ r));
    // black_box keeps the optimiser from turning the fold into an early-exit compare.
    std::hint::black_box(difference) == 0
}

/// Reads `role:secret` lines; blank lines and lines starting with `#` are skipped.
pub fn read_tokens_file(path: &Path) -> Result<Vec<TokenSpec>, TokenError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenError::Io {
        context: "cannot read the tokens file",
        path: path.to_owned(),
        source,
    })?;
    let mut specs = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let spec = line.parse().map_err(|source| TokenError::InFile {
            path: path.to_owned(),
            line: index + 1,
            source: Box::new(source),
        })?;
        specs.push(spec);
        if specs.len() > TOKENS_MAX {
            return Err(TokenError::TooMany);
        }
    }
    Ok(specs)
}

/// Generates one random secret per role and writes them to `path`, created with mode
/// 0600 (and never overwritten), synced before it is used.
pub fn generate_tokens_file(path: &Path) -> Result<Vec<TokenSpec>, TokenError> {
    let mut specs = Vec::with_capacity(Role::ALL.len());
    let mut text = String::from(
        "# API tokens generated on first start, one per role: ROLE:SECRET.\n\
         # Send them as `Authorization: Bearer SECRET`. Keep this file private.\n",
    );
    for role in Role::ALL {
        let mut bytes = [0u8; GENERATED_SECRET_BYTES];
        getrandom::fill(&mut bytes).map_err(|error| TokenError::Random(error.to_string()))?;
        let secret: String = ledger::hex::encode(&bytes);
        text.push_str(&format!("{role}:{secret}\n"));
        specs.push(TokenSpec::new(role, secret)?);
    }
    let io = |context| {
        move |source| TokenError::Io {
            context,
            path: path.to_owned(),
            source,
        }
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(io("cannot create the tokens file"))?;
    file.write_all(text.as_bytes())
        .map_err(io("cannot write the tokens file"))?;
    file.sync_all().map_err(io("cannot sync the tokens file"))?;
    Ok(specs)
}

/// Where the server's tokens come from, in order of precedence: `--token` flags, then a
/// `--tokens-file`, then `<data>/tokens`, generated there if it does not exist.
#[derive(Debug)]
pub enum TokenSource {
    Flags,
    File(PathBuf),
    Generated(PathBuf),
}

pub fn resolve_tokens(
    flags: &[TokenSpec],
    tokens_file: Option<&Path>,
    data_dir: &Path,
) -> Result<(Vec<TokenSpec>, TokenSource), TokenError> {
    if !flags.is_empty() {
        return Ok((flags.to_vec(), TokenSource::Flags));
    }
    if let Some(path) = tokens_file {
        return Ok((read_tokens_file(path)?, TokenSource::File(path.to_owned())));
    }
    let path = data_dir.join(TOKENS_FILE_NAME);
    if path.exists() {
        return Ok((read_tokens_file(&path)?, TokenSource::File(path)));
    }
    let specs = generate_tokens_file(&path)?;
    Ok((specs, TokenSource::Generated(path)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_maps_to_its_role_and_nothing_else_does() {
        let tokens = Tokens::new(&[
            TokenSpec::new(Role::Billing, "billing-secret-0123").unwrap(),
            TokenSpec::new(Role::Auditor, "auditor-secret-0123").unwrap(),
        ])
        .unwrap();
        assert_eq!(tokens.role_of(b"billing-secret-0123"), Some(Role::Billing));
        assert_eq!(tokens.role_of(b"auditor-secret-0123"), Some(Role::Auditor));
        assert_eq!(tokens.role_of(b"billing-secret-012"), None);
        assert_eq!(tokens.role_of(b""), None);
    }

    #[test]
    fn token_specs_are_parsed_and_checked() {
        let spec: TokenSpec = "finance:abcdefghijklmnop".parse().unwrap();
        assert_eq!(spec.role(), Role::Finance);
        assert_eq!(spec.secret(), "abcdefghijklmnop");
        assert!(matches!(
            "boss:abcdefghijklmnop".parse::<TokenSpec>(),
            Err(TokenError::UnknownRole { .. })
        ));
        assert!(matches!(
            "finance:short".parse::<TokenSpec>(),
            Err(TokenError::BadSecret { .. })
        ));
        assert!(matches!(
            "financeabcdefghijklmnop".parse::<TokenSpec>(),
            Err(TokenError::MissingSeparator)
        ));
        assert!(!format!("{spec:?}").contains("abcdefghijklmnop"));
    }

    #[test]
    fn generated_tokens_are_private_random_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let (specs, source) = resolve_tokens(&[], None, dir.path()).unwrap();
        assert!(matches!(source, TokenSource::Generated(_)));
        assert_eq!(specs.len(), Role::ALL.len());
        let path = dir.path().join(TOKENS_FILE_NAME);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let secrets: std::collections::HashSet<&str> =
            specs.iter().map(TokenSpec::secret).collect();
        assert_eq!(secrets.len(), specs.len(), "every role gets its own secret");
        // A second start reads the same tokens instead of generating new ones.
        let (again, source) = resolve_tokens(&[], None, dir.path()).unwrap();
        assert!(matches!(source, TokenSource::File(_)));
        assert!(again == specs);
    }
}
