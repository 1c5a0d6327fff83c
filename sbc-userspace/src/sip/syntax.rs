//! Character classes and small lexical helpers of RFC 3261's grammar (section 25.1).

/// `token` characters: alphanumerics and `-.!%*_+`'~`.
pub fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-.!%*_+`'~".contains(&b)
}

pub fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_token_char)
}

/// Linear white space inside an (already unfolded) header value.
pub fn is_ws(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

pub fn trim_ws(s: &str) -> &str {
    s.trim_matches([' ', '\t'])
}

/// Splits `s` at `separator` where it is not inside a quoted string or `<...>`, trimming each
/// piece (e.g. a header value holding several comma-separated values).
pub fn split_top_level(s: &str, separator: u8) -> Vec<&str> {
    let bytes = s.as_bytes();
    let mut pieces = Vec::new();
    let (mut start, mut i) = (0, 0);
    let (mut quoted, mut angle) = (false, false);
    while i < bytes.len() {
        let b = bytes[i];
        if quoted {
            match b {
                b'\\' => i += 1,
                b'"' => quoted = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => quoted = true,
                b'<' => angle = true,
                b'>' => angle = false,
                _ if b == separator && !angle => {
                    pieces.push(trim_ws(&s[start..i]));
                    start = i + 1;
                }
                _ => {}
            }
        }
        i += 1;
    }
    pieces.push(trim_ws(&s[start.min(s.len())..]));
    pieces
}

/// The text of `whole` from where `piece` (a slice of it, as `split_top_level` returns) starts:
/// what follows a value that is edited or removed, kept as it was written.
pub fn from_piece<'a>(whole: &'a str, piece: &str) -> &'a str {
    let offset = (piece.as_ptr() as usize).saturating_sub(whole.as_ptr() as usize);
    &whole[offset.min(whole.len())..]
}

/// Reads a quoted string at the start of `s` (which begins with `"`); returns its content (with
/// quoted-pairs resolved) and the rest after the closing quote.
pub fn quoted_string(s: &str) -> Result<(String, &str), String> {
    debug_assert!(s.starts_with('"'));
    let mut out = String::new();
    let mut chars = s[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[1 + i + 1..])),
            '\\' => match chars.next() {
                Some((_, escaped)) => out.push(escaped),
                None => break,
            },
            _ => out.push(c),
        }
    }
    Err("unterminated quoted string".into())
}

/// A generic parameter (`;name[=value]`) as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub value: Option<String>,
}

/// Parses `;name[=value]` parameters (the text after the first `;`, or empty). Whitespace is
/// allowed around `;` and `=`; an empty name (`;;`) is an error. Values may be quoted.
pub fn params(s: &str) -> Result<Vec<Param>, String> {
    let s = trim_ws(s);
    if s.is_empty() {
        return Ok(Vec::new());
    }
    let Some(s) = s.strip_prefix(';') else {
        return Err(format!("unexpected text {s:?} before the parameters"));
    };
    let mut out = Vec::new();
    for piece in split_top_level(s, b';') {
        let (name, value) = match piece.split_once('=') {
            Some((name, value)) => (trim_ws(name), Some(trim_ws(value))),
            None => (piece, None),
        };
        if !is_token(name) {
            return Err(format!("bad parameter name {name:?}"));
        }
        let value = match value {
            None => None,
            Some(v) if v.starts_with('"') => {
                let (content, rest) = quoted_string(v)?;
                if !trim_ws(rest).is_empty() {
                    return Err(format!("text after the quoted value of {name}"));
                }
                Some(content)
            }
            Some(v) if v.is_empty() || v.bytes().any(|b| is_ws(b) || b == b',') => {
                return Err(format!("bad value for parameter {name}"));
            }
            Some(v) => Some(v.to_owned()),
        };
        out.push(Param {
            name: name.to_owned(),
            value,
        });
    }
    Ok(out)
}

pub fn param<'a>(params: &'a [Param], name: &str) -> Option<&'a Param> {
    params.iter().find(|p| p.name.eq_ignore_ascii_case(name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_outside_quotes_and_brackets() {
        assert_eq!(
            split_top_level(r#""a, b" <sip:x;a,b>;p=1 , c"#, b','),
            vec![r#""a, b" <sip:x;a,b>;p=1"#, "c"]
        );
    }

    #[test]
    fn quoted_strings_resolve_pairs_and_detect_unterminated() {
        assert_eq!(
            quoted_string(r#""J \"R\"" <x>"#).unwrap(),
            ("J \"R\"".into(), " <x>")
        );
        assert!(quoted_string(r#""Mr. J. User <sip:j@x>"#).is_err());
    }

    #[test]
    fn params_allow_whitespace_and_reject_empty_names() {
        let p = params(" ;   tag    = 1918181833n").unwrap();
        assert_eq!(
            p,
            vec![Param {
                name: "tag".into(),
                value: Some("1918181833n".into())
            }]
        );
        assert!(params(";;;;").is_err());
        assert!(params(";a=\"q v\";lr").unwrap().len() == 2);
    }
}
