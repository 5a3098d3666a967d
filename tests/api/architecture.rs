//! The module map's import rules, checked on the source text of `src/`: which crates and which
//! crate modules each module may use. It reads the files as text (no compilation), drops
//! comments and literals, and looks at every `use` declaration (grouped ones expanded, inside
//! functions too) and every path written out in code (`sled::Db`, `crate::http::x`).
//!
//! Paths are read as written: a `super::super::storage` that climbs out of its module is not
//! resolved, so the code writes `crate::` paths across modules.
//!
//! The rules are the "must not import" column of the module map in docs/architecture.md; the
//! table below says the same and must change with it.

use std::path::{Path, PathBuf};

/// One row of the rules: files under `files` (except those under `except`) must not import
/// anything that `imports` names. A pattern is a path prefix by whole segments (`crate::storage`
/// covers `crate::storage::Store`, not `crate::storages`); a trailing `*` (`actix_*`) covers every
/// crate whose name starts so. File patterns are paths from the repository root; one ending in
/// `/` covers the folder.
struct Rule {
    files: &'static [&'static str],
    except: &'static [&'static str],
    imports: &'static [&'static str],
    /// The rule in words, as the failure names it.
    rule: &'static str,
}

/// The crates that do cryptography.
const CRYPTO_CRATES: [&str; 5] = ["aes_siv", "hmac", "sha2", "subtle", "hkdf"];

impl Rule {
    /// Files under `files` must not import anything `imports` names.
    const fn forbid(
        files: &'static [&'static str],
        imports: &'static [&'static str],
        rule: &'static str,
    ) -> Self {
        Self {
            files,
            except: &[],
            imports,
            rule,
        }
    }

    /// The same rule, for every file but those under `except`.
    const fn except(self, except: &'static [&'static str]) -> Self {
        Self { except, ..self }
    }
}

/// docs/architecture.md, "Module map": keep the two in step.
const RULES: &[Rule] = &[
    Rule::forbid(&["src/"], &["sled"], "sled only in src/storage/").except(&["src/storage/"]),
    Rule::forbid(
        &["src/"],
        &["actix_web", "actix_*", "utoipa", "utoipa_swagger_ui"],
        "actix and utoipa only in src/http/ and src/startup.rs",
    )
    .except(&["src/http/", "src/startup.rs"]),
    Rule::forbid(
        &["src/"],
        &["ulid"],
        "ulid only in src/service/ (ids) and src/storage/ (event ids)",
    )
    .except(&["src/service/", "src/storage/"]),
    Rule::forbid(
        &["src/"],
        &["prometheus"],
        "prometheus only in src/metrics.rs (everything else counts through it)",
    )
    .except(&["src/metrics.rs"]),
    Rule::forbid(
        &["src/metrics.rs"],
        &["crate"],
        "metrics imports nothing of the crate, so every module may count",
    ),
    Rule::forbid(
        &["src/"],
        &CRYPTO_CRATES,
        "aes_siv, hmac, sha2, subtle and hkdf only in src/crypto/",
    )
    .except(&["src/crypto/"]),
    Rule::forbid(
        &["src/domain/", "src/es/"],
        &[
            "crate::storage",
            "crate::service",
            "crate::http",
            "crate::startup",
            "crate::config",
            "sled",
            "actix_*",
            "utoipa",
            "utoipa_*",
            "tokio",
            "aes_siv",
            "hmac",
            "sha2",
            "subtle",
            "hkdf",
        ],
        "domain and es are pure: no storage, service, http, startup or config, no sled, actix, \
         utoipa, tokio or crypto crates",
    ),
    Rule::forbid(
        &["src/es/"],
        &["crate::domain"],
        "es does not know the domain",
    ),
    Rule::forbid(
        &["src/domain/"],
        &["crate::crypto"],
        "domain does not import crypto",
    ),
    Rule::forbid(
        &["src/storage/"],
        &["crate::service", "crate::http"],
        "storage does not import service or http",
    ),
    Rule::forbid(
        &["src/service/"],
        &["crate::http"],
        "service does not import http",
    ),
    Rule::forbid(
        &["src/crypto/"],
        &[
            "crate::storage",
            "crate::service",
            "crate::http",
            "crate::domain",
        ],
        "crypto does not import storage, service, http or domain",
    ),
    Rule::forbid(
        &["src/"],
        &[
            "reqwest",
            "aws_sigv4",
            "aws_credential_types",
            "aws_smithy_*",
            "jsonwebtoken",
        ],
        "reqwest, aws_sigv4 and jsonwebtoken only in src/outbound/ (every outbound call goes \
         through its SSRF policy)",
    )
    .except(&["src/outbound/"]),
    Rule::forbid(
        &["src/outbound/"],
        &[
            "crate::storage",
            "crate::service",
            "crate::http",
            "crate::startup",
            "crate::config",
        ],
        "outbound does not import storage, service, http, startup or config",
    ),
    Rule::forbid(
        &["src/domain/", "src/es/", "src/storage/", "src/crypto/"],
        &["crate::outbound"],
        "only service (and startup, which builds the client) calls out",
    ),
];

#[derive(Debug, PartialEq)]
enum Tok {
    Ident(String),
    PathSep,
    Punct(char),
}

struct Token {
    tok: Tok,
    line: usize,
}

/// The tokens that matter for paths, with comments (doc comments included), string, byte, raw
/// and char literals and numbers left out.
fn tokens(source: &str) -> Vec<Token> {
    let chars: Vec<char> = source.chars().collect();
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    let is_ident = |c: char| c == '_' || c.is_alphanumeric();
    while i < chars.len() {
        let c = chars[i];
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if c == '"' {
            i = skip_string(&chars, i + 1, 0, &mut line);
        } else if c == '\'' {
            // A char literal ('x', '\n', '\u{..}') or a lifetime or label ('a).
            if at(i + 1) == '\\' {
                // Past the backslash and the escaped character, which may itself be a quote.
                i += 3;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1;
            }
        } else if c.is_ascii_digit() {
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
        } else if is_ident(c) {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            match (word.as_str(), at(i)) {
                ("r" | "br" | "cr", '"' | '#') if raw_string_starts(&chars, i) => {
                    let mut hashes = 0;
                    while at(i) == '#' {
                        hashes += 1;
                        i += 1;
                    }
                    i = skip_string(&chars, i + 1, hashes, &mut line);
                }
                ("r", '#') => {
                    // A raw identifier, r#type: the identifier follows.
                    i += 1;
                }
                ("b" | "c", '"') => i = skip_string(&chars, i + 1, 0, &mut line),
                ("b", '\'') => {
                    i += 1;
                    while i < chars.len() && chars[i] != '\'' {
                        i += if chars[i] == '\\' { 2 } else { 1 };
                    }
                    i += 1;
                }
                _ => out.push(Token {
                    tok: Tok::Ident(word),
                    line,
                }),
            }
        } else if c == ':' && at(i + 1) == ':' {
            out.push(Token {
                tok: Tok::PathSep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(c),
                line,
            });
            i += 1;
        }
    }
    out
}

/// Whether `#`s then `"` start at `i` (a raw string, not a raw identifier).
fn raw_string_starts(chars: &[char], mut i: usize) -> bool {
    while chars.get(i) == Some(&'#') {
        i += 1;
    }
    chars.get(i) == Some(&'"')
}

/// Skips a string whose body starts at `i`, closed by `"` and `hashes` `#`s (escapes only count
/// when `hashes` is 0 and the string is not raw; a raw string with no hashes has none either,
/// which only matters for `r"\"`, an edge case left alone); answers the index after it.
fn skip_string(chars: &[char], mut i: usize, hashes: usize, line: &mut usize) -> usize {
    while i < chars.len() {
        match chars[i] {
            '\\' if hashes == 0 => {
                if chars.get(i + 1) == Some(&'\n') {
                    *line += 1;
                }
                i += 2;
            }
            '"' if (1..=hashes).all(|k| chars.get(i + k) == Some(&'#')) => return i + 1 + hashes,
            c => {
                if c == '\n' {
                    *line += 1;
                }
                i += 1;
            }
        }
    }
    i
}

/// A path the file names: from a `use` declaration (one per leaf of a grouped one) or written
/// out in code.
#[derive(Debug)]
struct Import {
    line: usize,
    segments: Vec<String>,
    from_use: bool,
}

impl Import {
    fn text(&self) -> String {
        let path = self.segments.join("::");
        if self.from_use {
            format!("use {path}")
        } else {
            path
        }
    }
}

/// Every `use` leaf and every path of two or more segments in `source`.
fn imports(source: &str) -> Vec<Import> {
    let toks = tokens(source);
    let mut out = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        match &toks[i].tok {
            Tok::Ident(word) if word == "use" => {
                i += 1;
                use_tree(&toks, &mut i, &[], &mut out);
                // Whatever the tree did not take (a malformed declaration) up to its end.
                while i < toks.len() && toks[i].tok != Tok::Punct(';') {
                    i += 1;
                }
            }
            Tok::Ident(first) if starts_path(&toks, i) => {
                let line = toks[i].line;
                let mut segments = vec![first.clone()];
                i += 1;
                while let (Some(Tok::PathSep), Some(Tok::Ident(next))) =
                    (toks.get(i).map(|t| &t.tok), toks.get(i + 1).map(|t| &t.tok))
                {
                    segments.push(next.clone());
                    i += 2;
                }
                if segments.len() > 1 {
                    out.push(Import {
                        line,
                        segments,
                        from_use: false,
                    });
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    out
}

/// Whether the identifier at `i` begins a path: it does not follow `::`, unless that `::` is
/// itself the path's start (`::sled::Db`).
fn starts_path(toks: &[Token], i: usize) -> bool {
    if i == 0 || toks[i - 1].tok != Tok::PathSep {
        return true;
    }
    !matches!(
        toks.get(i.wrapping_sub(2)).map(|t| &t.tok),
        Some(Tok::Ident(_) | Tok::Punct('>'))
    )
}

/// Reads one use tree at `i` under `prefix`, pushing every leaf path.
fn use_tree(toks: &[Token], i: &mut usize, prefix: &[String], out: &mut Vec<Import>) {
    let mut path = prefix.to_vec();
    let mut line = toks.get(*i).map_or(0, |t| t.line);
    while let Some(token) = toks.get(*i) {
        match &token.tok {
            Tok::PathSep => *i += 1,
            Tok::Ident(word) if word == "as" => {
                *i += 2;
                break;
            }
            Tok::Ident(word) => {
                path.push(word.clone());
                line = token.line;
                *i += 1;
            }
            Tok::Punct('{') => {
                *i += 1;
                loop {
                    use_tree(toks, i, &path, out);
                    match toks.get(*i).map(|t| &t.tok) {
                        Some(Tok::Punct(',')) => *i += 1,
                        Some(Tok::Punct('}')) => {
                            *i += 1;
                            return;
                        }
                        _ => return,
                    }
                }
            }
            Tok::Punct('*') => {
                *i += 1;
                break;
            }
            _ => break,
        }
    }
    if path.len() > prefix.len() {
        out.push(Import {
            line,
            segments: path,
            from_use: true,
        });
    }
}

/// Whether `segments` fall under `pattern` (see `Rule`).
fn matches(pattern: &str, segments: &[String]) -> bool {
    if let Some(stem) = pattern.strip_suffix('*') {
        return segments.first().is_some_and(|s| s.starts_with(stem));
    }
    let parts: Vec<&str> = pattern.split("::").collect();
    segments.len() >= parts.len() && parts.iter().zip(segments).all(|(p, s)| p == s)
}

fn under(file: &str, pattern: &str) -> bool {
    if pattern.ends_with('/') {
        file.starts_with(pattern)
    } else {
        file == pattern
    }
}

/// Every import of `source` (the text of `file`, a path from the repository root such as
/// `src/domain/scope.rs`) that breaks a rule, one line each: file, line, the import, the rule.
fn check(file: &str, source: &str) -> Vec<String> {
    let rules: Vec<&Rule> = RULES
        .iter()
        .filter(|r| r.files.iter().any(|f| under(file, f)))
        .filter(|r| !r.except.iter().any(|f| under(file, f)))
        .collect();
    let mut violations = Vec::new();
    for import in imports(source) {
        for rule in &rules {
            if rule.imports.iter().any(|p| matches(p, &import.segments)) {
                violations.push(format!(
                    "{file}:{}: `{}` breaks \"{}\"",
                    import.line,
                    import.text(),
                    rule.rule
                ));
            }
        }
    }
    violations
}

/// Every `.rs` file under `dir`, sorted.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("read src/") {
        let path = entry.expect("read src/").path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

#[test]

fn every_module_imports_only_what_the_module_map_allows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let files = rust_files(&root.join("src"));
    assert!(files.len() > 10, "src/ was not read: {files:?}");
    let mut violations = Vec::new();
    for path in files {
        let file = path
            .strip_prefix(root)
            .expect("under the repository")
            .to_string_lossy()
            .replace('\\', "/");
        let source = std::fs::read_to_string(&path).expect("read a source file");
        violations.extend(check(&file, &source));
    }
    assert!(
        violations.is_empty(),
        "{} imports break the module map (docs/architecture.md):\n{}",
        violations.len(),
        violations.join("\n")
    );
}

#[test]
fn the_checker_reports_a_misplaced_import() {
    let sample = "//! A domain module.\n\
                  use crate::es::StreamId;\n\
                  use sled::Db;\n";
    let found = check("src/domain/x.rs", sample);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(
        found[0]
            .starts_with("src/domain/x.rs:3: `use sled::Db` breaks \"sled only in src/storage/\""),
        "{found:?}"
    );
    assert!(found[1].contains("domain and es are pure"), "{found:?}");

    // Grouped, nested, inside a function, and written out in code.
    let sample = "use crate::{es::StreamId, storage::{self, Store}};\n\
                  fn f() {\n    use tokio::sync::watch;\n\
                  \x20   let x = crate::http::cursor::decode(\"\");\n}\n\
                  #[derive(utoipa::ToSchema)]\nstruct S;\n";
    let found = check("src/domain/y.rs", sample);
    let texts: Vec<&str> = found
        .iter()
        .map(|v| v.split('`').nth(1).unwrap_or_default())
        .collect();
    assert_eq!(
        texts,
        [
            "use crate::storage::self",
            "use crate::storage::Store",
            "use tokio::sync::watch",
            "crate::http::cursor::decode",
            "utoipa::ToSchema",
            // utoipa breaks two rules in the domain: where actix and utoipa may be, and purity.
            "utoipa::ToSchema",
        ],
        "{found:#?}"
    );
    assert!(found[3].starts_with("src/domain/y.rs:4:"), "{found:?}");
    assert!(
        check("src/es/z.rs", "use crate::domain::Scope;")[0].contains("es does not know"),
        "es importing the domain"
    );
}

#[test]
fn the_checker_passes_a_correct_sample() {
    // Allowed where it stands; named only in comments and literals elsewhere.
    assert_eq!(
        check(
            "src/storage/x.rs",
            "use sled::Db;\nuse crate::domain::Scope;\n"
        ),
        Vec::<String>::new()
    );
    let sample = "//! Never `use sled::Db;` here.\n\
                  /// Not crate::http::x either.\n\
                  /* sled::Tree, /* nested */ crate::storage */\n\
                  use crate::es::{Envelope, StreamId};\n\
                  use super::providers;\n\
                  const A: &str = \"use sled::Db; crate::http::x\";\n\
                  const B: &str = r#\"tokio::spawn(\"x\")\"#;\n\
                  const C: char = '\"';\n\
                  fn f<'a>(s: &'a str) -> String { std::format!(\"{s}\") }\n";
    assert_eq!(check("src/domain/x.rs", sample), Vec::<String>::new());
    assert_eq!(
        check("src/startup.rs", "use actix_web::App;"),
        Vec::<String>::new()
    );
    assert_eq!(
        check("src/crypto/x.rs", "use aes_siv::Aes256SivAead;"),
        Vec::<String>::new()
    );
    // A crate whose name merely starts like a forbidden one is not it.
    assert_eq!(
        check("src/domain/x.rs", "use sledgehammer::Hit;"),
        Vec::<String>::new()
    );
}
