//! Parses one request line into a [`Command`]: the `show` commands routed answers. BIRD's
//! client expands abbreviations before sending, so only whole keywords are accepted here;
//! anything else is a [`ParseError`] that the renderer turns into BIRD's own error reply.

use std::net::IpAddr;

/// What a request asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Status,
    Protocols { all: bool, name: Option<String> },
    Route(RouteQuery),
    RouteCount,
    BfdSessions { name: Option<String> },
}

/// `show route [for ADDR|PREFIX] [protocol NAME] [all]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteQuery {
    /// An address or prefix: the longest prefix holding it.
    pub for_addr: Option<(IpAddr, Option<u8>)>,
    pub protocol: Option<String>,
    pub all: bool,
}

/// Why a request was not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Unknown words or a malformed line.
    Syntax,
    /// A protocol name that does not exist (known only once the snapshot is taken).
    NotAProtocol(String),
}

fn is_name(word: &str) -> bool {
    word.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && word.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn parse_addr(word: &str) -> Result<(IpAddr, Option<u8>), ParseError> {
    let (addr, len) = match word.split_once('/') {
        Some((a, l)) => (a, Some(l.parse::<u8>().map_err(|_| ParseError::Syntax)?)),
        None => (word, None),
    };
    let addr: IpAddr = addr.parse().map_err(|_| ParseError::Syntax)?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    if len.is_some_and(|l| l > max) {
        return Err(ParseError::Syntax);
    }
    Ok((addr, len))
}

fn parse_route(words: &[&str]) -> Result<Command, ParseError> {
    let mut query = RouteQuery::default();
    let mut count = false;
    let mut i = 0;
    while let Some(word) = words.get(i) {
        match *word {
            "all" => query.all = true,
            "count" => count = true,
            "for" => {
                i += 1;
                let addr = words.get(i).ok_or(ParseError::Syntax)?;
                query.for_addr = Some(parse_addr(addr)?);
            }
            "protocol" => {
                i += 1;
                let name = words
                    .get(i)
                    .filter(|w| is_name(w))
                    .ok_or(ParseError::Syntax)?;
                query.protocol = Some((*name).to_string());
            }
            _ => return Err(ParseError::Syntax),
        }
        i += 1;
    }
    if count {
        if query.all {
            return Err(ParseError::Syntax);
        }
        return Ok(Command::RouteCount);
    }
    Ok(Command::Route(query))
}

fn optional_name(words: &[&str]) -> Result<Option<String>, ParseError> {
    match words {
        [] => Ok(None),
        [name] if is_name(name) => Ok(Some((*name).to_string())),
        // BIRD accepts a quoted pattern too; a quoted exact name is what clients send.
        [quoted] if quoted.len() > 2 && quoted.starts_with('"') && quoted.ends_with('"') => {
            Ok(Some(quoted[1..quoted.len() - 1].to_string()))
        }
        _ => Err(ParseError::Syntax),
    }
}

/// Parses one request line (without its newline).
pub fn parse(line: &str) -> Result<Command, ParseError> {
    let words: Vec<&str> = line.split_whitespace().collect();
    match words.as_slice() {
        ["show", "status"] => Ok(Command::Status),
        ["show", "protocols", "all", rest @ ..] => Ok(Command::Protocols {
            all: true,
            name: optional_name(rest)?,
        }),
        ["show", "protocols", rest @ ..] => Ok(Command::Protocols {
            all: false,
            name: optional_name(rest)?,
        }),
        ["show", "route", rest @ ..] => parse_route(rest),
        ["show", "bfd", "sessions", rest @ ..] => Ok(Command::BfdSessions {
            name: optional_name(rest)?,
        }),
        _ => Err(ParseError::Syntax),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_commands_parse() {
        assert_eq!(parse("show status"), Ok(Command::Status));
        assert_eq!(
            parse("show protocols all Mesh_10_0_0_2"),
            Ok(Command::Protocols {
                all: true,
                name: Some("Mesh_10_0_0_2".into())
            })
        );
        assert_eq!(
            parse("show protocols"),
            Ok(Command::Protocols {
                all: false,
                name: None
            })
        );
        assert_eq!(parse("show route count"), Ok(Command::RouteCount));
        let Ok(Command::Route(q)) = parse("show route for 10.244.2.1 protocol Mesh_10_0_0_2 all")
        else {
            panic!("route query");
        };
        assert_eq!(q.for_addr, Some(("10.244.2.1".parse().unwrap(), None)));
        assert!(q.all);
        assert_eq!(
            parse("show bfd sessions bfd1"),
            Ok(Command::BfdSessions {
                name: Some("bfd1".into())
            })
        );
    }

    #[test]
    fn anything_else_is_a_syntax_error() {
        for line in [
            "",
            "show",
            "show frobnicate",
            "configure",
            "show route for 10.0.0.300",
            "show route for 10.0.0.0/33",
            "show route protocol",
            "show protocols a b",
            "down",
        ] {
            assert_eq!(parse(line), Err(ParseError::Syntax), "{line:?}");
        }
    }
}
