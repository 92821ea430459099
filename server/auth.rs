//! Bearer tokens: the token file, which RPC needs which role, and the check
//! of a call's `authorization` metadata.
//!
//! The token file holds one token per line, `ro TOKEN` (reads) or
//! `rw TOKEN` (reads and writes); blank lines and lines starting with `#`
//! are ignored. Tokens are compared in constant time, every configured
//! token on every check, so how long a check takes tells nothing about how
//! much of a token was right nor which token matched (only whether the
//! presented token's length equals some token's, which is not a secret:
//! tokens are long random strings).
//!
//! Every RPC of `lse.Lse` is classified in [`lse_access`], by name; a
//! method missing there (a new RPC nobody classified) is a write, so it
//! fails closed, and a unit test checks that the proto has none.

use std::path::Path;

use subtle::{Choice, ConstantTimeEq};
use tonic::Status;

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Reads only (`ro`).
    ReadOnly,
    /// Reads and writes (`rw`).
    ReadWrite,
}

/// What a call needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// No token: the health service.
    Open,
    /// A token of either role.
    Read,
    /// A read-write token.
    Write,
}

/// Shortest token accepted: 16 characters of a random hex string are 64
/// bits, the least that cannot be guessed over the network.
pub const MIN_TOKEN_LEN: usize = 16;

/// Longest token accepted (gRPC metadata stays small).
pub const MAX_TOKEN_LEN: usize = 4096;

/// The tokens of a token file.
pub struct Tokens {
    entries: Vec<(Vec<u8>, Role)>,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens themselves.
        f.debug_struct("Tokens").field("count", &self.entries.len()).finish()
    }
}

impl Tokens {
    /// Reads a token file. Errors say which line is wrong (without
    /// repeating the token).
    pub fn load(path: &Path) -> Result<Tokens, String> {
        let text =
            std::fs::read_to_string(path).map_err(|e| format!("cannot read --token-file {}: {e}", path.display()))?;
        Tokens::parse(&text).map_err(|e| format!("--token-file {}: {e}", path.display()))
    }

    /// Parses the text of a token file.
    pub fn parse(text: &str) -> Result<Tokens, String> {
        let mut entries: Vec<(Vec<u8>, Role)> = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let number = index + 1;
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut fields = line.split_whitespace();
            let (Some(role), Some(token), None) = (fields.next(), fields.next(), fields.next()) else {
                return Err(format!("line {number}: expected `ro TOKEN` or `rw TOKEN`"));
            };
            let role = match role {
                "ro" => Role::ReadOnly,
                "rw" => Role::ReadWrite,
                // Not echoed: a line with its fields swapped holds a token there.
                _ => return Err(format!("line {number}: the role (first field) is neither ro nor rw")),
            };
            if !(MIN_TOKEN_LEN..=MAX_TOKEN_LEN).contains(&token.len()) {
                return Err(format!(
                    "line {number}: a token must be {MIN_TOKEN_LEN} to {MAX_TOKEN_LEN} characters, this one has {} \
                     (make one with `openssl rand -hex 32`)",
                    token.len()
                ));
            }
            if !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(format!("line {number}: a token must be printable ASCII without spaces"));
            }
            if entries.iter().any(|(known, _)| known == token.as_bytes()) {
                return Err(format!("line {number}: the token appears twice"));
            }
            entries.push((token.as_bytes().to_vec(), role));
        }
        if entries.is_empty() {
            return Err("no tokens (lines `ro TOKEN` or `rw TOKEN`): every call would be refused".to_string());
        }
        Ok(Tokens { entries })
    }

    /// How many tokens there are.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none (never true of a parsed file).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The role of `presented`, if it is one of the tokens. Takes the same
    /// time whichever token matches, or none.
    pub fn role(&self, presented: &[u8]) -> Option<Role> {
        let mut found = Choice::from(0);
        let mut writes = Choice::from(0);
        for (token, role) in &self.entries {
            let hit = token.as_slice().ct_eq(presented);
            found |= hit;
            writes |= hit & Choice::from(u8::from(*role == Role::ReadWrite));
        }
        match (bool::from(found), bool::from(writes)) {
            (false, _) => None,
            (true, false) => Some(Role::ReadOnly),
            (true, true) => Some(Role::ReadWrite),
        }
    }

    /// Checks a call to `path` carrying the `authorization` header value
    /// `authorization`: UNAUTHENTICATED without a valid token,
    /// PERMISSION_DENIED for a write with a read-only one.
    pub fn authorize(&self, path: &str, access: Access, authorization: Option<&[u8]>) -> Result<(), Status> {
        if access == Access::Open {
            return Ok(());
        }
        let Some(value) = authorization else {
            return Err(Status::unauthenticated(
                "this server needs a token: send the metadata `authorization: Bearer TOKEN`",
            ));
        };
        let Some(token) = bearer_token(value) else {
            return Err(Status::unauthenticated("the authorization metadata must be `Bearer TOKEN`"));
        };
        match (self.role(token), access) {
            (None, _) => Err(Status::unauthenticated("the bearer token is not valid")),
            (Some(Role::ReadOnly), Access::Write) => {
                let method = path.rsplit('/').next().unwrap_or(path);
                Err(Status::permission_denied(format!("{method} is a write and the token is read-only")))
            }
            (Some(_), _) => Ok(()),
        }
    }
}

/// The token of an `authorization` value `Bearer TOKEN` (the scheme in
/// any case, as HTTP has it).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let (scheme, rest) = value.split_at_checked(7)?;
    if !scheme.eq_ignore_ascii_case(b"bearer ") {
        return None;
    }
    let token = rest.trim_ascii();
    (!token.is_empty()).then_some(token)
}

/// What a call to the gRPC path `path` (`/package.Service/Method`) needs.
/// Anything not known to be open or a read is a write.
pub fn access(path: &str) -> Access {
    let mut parts = path.strip_prefix('/').unwrap_or(path).splitn(2, '/');
    match (parts.next(), parts.next()) {
        (Some("grpc.health.v1.Health"), _) => Access::Open,
        // Reflection describes the schema only, but is no client's business
        // without a token: any token will do.
        (Some("grpc.reflection.v1.ServerReflection" | "grpc.reflection.v1alpha.ServerReflection"), _) => Access::Read,
        (Some("lse.Lse"), Some(method)) => lse_access(method).unwrap_or(Access::Write),
        _ => Access::Write,
    }
}

/// The access each RPC of `lse.Lse` needs; `None` for a name that is not
/// one. Administration (Flush, CompactNow) changes the store's files, so
/// it is a write; GetStats is a read.
pub fn lse_access(method: &str) -> Option<Access> {
    Some(match method {
        "GetProblemHtml" | "GetProblemMeta" | "ListProblems" | "GetTestCase" | "GetAllTestCases"
        | "GetExpectedOutput" | "GetStats" | "GetProblem" | "GetProblemStream" => Access::Read,
        "CreateProblem"
        | "UpdateProblemHtml"
        | "UpdateProblemColumn"
        | "DeleteProblem"
        | "AddTestCase"
        | "UpdateTestCase"
        | "DeleteTestCase"
        | "SetExpectedOutput"
        | "UpdateExpectedOutput"
        | "DeleteExpectedOutput"
        | "ImportProblem"
        | "ImportProblemStream"
        | "ReplaceTestCases"
        | "ReplaceTestCasesStream"
        | "Batch"
        | "MoveTestCase"
        | "Flush"
        | "CompactNow" => Access::Write,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    const RW: &str = "rw-token-0123456789";
    const RO: &str = "ro-token-0123456789";

    fn tokens() -> Tokens {
        Tokens::parse(&format!("# team tokens\n\nrw {RW}\n  ro   {RO}  \n")).unwrap()
    }

    fn bearer(token: &str) -> Vec<u8> {
        format!("Bearer {token}").into_bytes()
    }

    #[test]
    fn every_rpc_of_the_proto_is_classified() {
        let proto = include_str!("../proto/lse.proto");
        let methods: Vec<&str> = proto
            .lines()
            .filter_map(|line| line.trim().strip_prefix("rpc "))
            .map(|rest| rest.split('(').next().unwrap().trim())
            .collect();
        assert_eq!(methods.len(), 27, "{methods:?}");
        for method in methods {
            assert!(lse_access(method).is_some(), "{method} is not classified as a read or a write");
        }
    }

    #[test]
    fn paths_are_classified_and_unknown_ones_are_writes() {
        assert_eq!(access("/grpc.health.v1.Health/Check"), Access::Open);
        assert_eq!(access("/grpc.health.v1.Health/Watch"), Access::Open);
        assert_eq!(access("/grpc.reflection.v1.ServerReflection/ServerReflectionInfo"), Access::Read);
        assert_eq!(access("/lse.Lse/GetProblemHtml"), Access::Read);
        assert_eq!(access("/lse.Lse/CompactNow"), Access::Write);
        assert_eq!(access("/lse.Lse/Flush"), Access::Write);
        assert_eq!(access("/lse.Lse/NoSuchMethod"), Access::Write);
        assert_eq!(access("/other.Service/Get"), Access::Write);
        assert_eq!(access("/grpc.health.v1.Healthy/Check"), Access::Write);
    }

    #[test]
    fn tokens_have_their_roles_and_nothing_else_matches() {
        let tokens = tokens();
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens.role(RW.as_bytes()), Some(Role::ReadWrite));
        assert_eq!(tokens.role(RO.as_bytes()), Some(Role::ReadOnly));
        assert_eq!(tokens.role(b"rw-token-012345678"), None, "a prefix");
        assert_eq!(tokens.role(b"rw-token-01234567890"), None, "an extension");
        assert_eq!(tokens.role(b""), None);
        assert_eq!(tokens.role(b"RW-TOKEN-0123456789"), None, "tokens are case-sensitive");
    }

    #[test]
    fn authorization_needs_a_valid_bearer_token_and_writes_a_read_write_one() {
        let tokens = tokens();
        let code =
            |access, header: Option<&[u8]>| tokens.authorize("/lse.Lse/X", access, header).err().map(|s| s.code());
        assert_eq!(code(Access::Open, None), None);
        assert_eq!(code(Access::Read, None), Some(Code::Unauthenticated));
        assert_eq!(code(Access::Read, Some(RW.as_bytes())), Some(Code::Unauthenticated), "no scheme");
        assert_eq!(code(Access::Read, Some(format!("Basic {RW}").as_bytes())), Some(Code::Unauthenticated));
        assert_eq!(code(Access::Read, Some(b"Bearer ")), Some(Code::Unauthenticated));
        assert_eq!(code(Access::Read, Some(&bearer("not-a-token-at-all"))), Some(Code::Unauthenticated));
        assert_eq!(code(Access::Read, Some(&bearer(RO))), None);
        assert_eq!(code(Access::Read, Some(format!("bearer {RO}").as_bytes())), None, "scheme in any case");
        assert_eq!(code(Access::Write, Some(&bearer(RO))), Some(Code::PermissionDenied));
        assert_eq!(code(Access::Write, Some(&bearer(RW))), None);
        assert_eq!(code(Access::Read, Some(&bearer(RW))), None);
    }

    #[test]
    fn bad_token_files_are_refused_with_the_line() {
        let refused = |text: &str, needle: &str| {
            let error = Tokens::parse(text).unwrap_err();
            assert!(error.contains(needle), "{error:?} does not mention {needle:?}");
            assert!(!error.contains("0123456789abcdef"), "the error repeats a token: {error:?}");
        };
        refused("", "no tokens");
        refused("# only a comment\n", "no tokens");
        refused("admin 0123456789abcdef\n", "line 1: the role");
        refused("0123456789abcdef rw\n", "line 1: the role");
        refused("rw\n", "line 1: expected");
        refused("rw 0123456789abcdef extra\n", "line 1: expected");
        refused("rw short\n", "16 to 4096");
        refused("rw 0123456789abcdef\nro 0123456789abcdef\n", "line 2: the token appears twice");
        refused("rw 0123456789abcdef\u{e9}\n", "printable ASCII");
    }
}
