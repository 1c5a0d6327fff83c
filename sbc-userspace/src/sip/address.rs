//! name-addr / addr-spec values (From, To, Contact, Route, Record-Route): RFC 3261 20.
use super::syntax::{
    Param, is_token, is_ws, param, params, quoted_string, split_top_level, trim_ws,
};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub display_name: Option<String>,
    /// The URI as written (inside `<>` when it was bracketed).
    pub uri: String,
    /// Header parameters (after the URI), e.g. `tag`.
    pub params: Vec<Param>,
}

impl Address {
    pub fn tag(&self) -> Option<&str> {
        param(&self.params, "tag").and_then(|p| p.value.as_deref())
    }
}

fn check_uri(uri: &str) -> Result<(), String> {
    match uri.split_once(':') {
        Some((scheme, _)) if !scheme.is_empty() => {}
        _ => return Err(format!("{uri:?} is not a URI")),
    }
    if uri.bytes().any(is_ws) {
        return Err("white space inside the URI".into());
    }
    Ok(())
}

/// One address. A URI with `,`, `?` or `;` of its own must be enclosed in `<>`.
pub fn parse(value: &str) -> Result<Address, String> {
    let value = trim_ws(value);
    let (display_name, rest) = if value.starts_with('"') {
        let (name, rest) = quoted_string(value)?;
        (Some(name), trim_ws(rest))
    } else if let Some(lt) = value.find('<') {
        let name = trim_ws(&value[..lt]);
        if !name
            .split([' ', '\t'])
            .filter(|w| !w.is_empty())
            .all(is_token)
        {
            return Err(format!("display name {name:?} must be quoted"));
        }
        ((!name.is_empty()).then(|| name.to_owned()), &value[lt..])
    } else {
        (None, value)
    };
    if let Some(inner) = rest.strip_prefix('<') {
        let gt = inner.find('>').ok_or("'<' without '>'")?;
        let uri = &inner[..gt];
        if uri != trim_ws(uri) {
            return Err("spaces inside <...>".into());
        }
        check_uri(uri)?;
        return Ok(Address {
            display_name,
            uri: uri.to_owned(),
            params: params(&inner[gt + 1..])?,
        });
    }
    if display_name.is_some() {
        return Err("a display name must be followed by <URI>".into());
    }
    let (uri, header_params) = match rest.find(';') {
        Some(semi) => (trim_ws(&rest[..semi]), &rest[semi..]),
        None => (rest, ""),
    };
    if uri.contains(['?', ',']) {
        return Err(format!(
            "{uri:?} must be enclosed in <> (it contains '?' or ',')"
        ));
    }
    check_uri(uri)?;
    Ok(Address {
        display_name: None,
        uri: uri.to_owned(),
        params: params(header_params)?,
    })
}

/// A comma-separated list of addresses (Contact, Route, Record-Route).
pub fn parse_list(value: &str) -> Result<Vec<Address>, String> {
    split_top_level(value, b',')
        .into_iter()
        .map(parse)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_forms() {
        let a = parse(r#""J Rosenberg \\\""       <sip:jdrosen@example.com> ;  tag = 98asjd8"#)
            .unwrap();
        assert_eq!(a.display_name.as_deref(), Some(r#"J Rosenberg \""#));
        assert_eq!(a.tag(), Some("98asjd8"));
        assert_eq!(
            parse("caller<sip:caller@example.com>;tag=323")
                .unwrap()
                .tag(),
            Some("323")
        );
        assert_eq!(parse("isbn:2983792873").unwrap().uri, "isbn:2983792873");
        let c = parse("sip:+19725552222@gw1.example.net;unknownparam").unwrap();
        assert_eq!(c.params[0].name, "unknownparam");
        assert_eq!(parse_list("<sip:a@b;lr>, <sip:c@d;lr>").unwrap().len(), 2);
    }

    #[test]
    fn rejected_forms() {
        for bad in [
            r#""Mr. J. User <sip:j.user@example.com>"#,
            "Bell, Alexander <sip:a.g.bell@example.com>;tag=43",
            "\"Watson, Thomas\" < sip:t.watson@example.org >",
            "sip:user@example.com?Route=%3Csip:sip.example.com%3E",
            "\"Joe\" <sip:joe@example.org>;;;;",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }
}
