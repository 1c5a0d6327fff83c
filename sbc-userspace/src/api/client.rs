//! A small blocking client for the control API over its Unix socket (HTTP/1.1, one request
//! per connection), used by the `sbc` commands, the tests and the demo.
use std::{
    io::{Read as _, Write as _},
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{Context as _, bail};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;

use super::contract::Refusal;

pub struct ApiClient {
    socket: PathBuf,
}

/// A response: status code and JSON body (`Null` when empty).
#[derive(Debug)]
pub struct ApiResponse {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub body: Value,
}

impl ApiClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        Self {
            socket: socket.into(),
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn get(&self, path: &str) -> anyhow::Result<ApiResponse> {
        self.request("GET", path, None)
    }

    pub fn post(&self, path: &str, body: &impl Serialize) -> anyhow::Result<ApiResponse> {
        let body = serde_json::to_value(body).context("a request body that is not JSON")?;
        self.request("POST", path, Some(&body))
    }

    pub fn delete(&self, path: &str) -> anyhow::Result<ApiResponse> {
        self.request("DELETE", path, None)
    }

    pub fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
    ) -> anyhow::Result<ApiResponse> {
        let mut stream = UnixStream::connect(&self.socket).with_context(|| {
            format!(
                "cannot reach the sbc daemon at {} (is `sbc run` up?)",
                self.socket.display()
            )
        })?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let body = body.map(Value::to_string).unwrap_or_default();
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: sbc\r\nConnection: close\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(request.as_bytes())?;
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw)?;
        parse_response(&raw)
    }
}

impl ApiResponse {
    /// The answer of the route (a type of `api::contract`) if the daemon answered with the
    /// `expected` status; else an error with the daemon's own reason.
    pub fn expect<T: DeserializeOwned>(self, expected: u16) -> anyhow::Result<T> {
        if self.status != expected {
            let message = serde_json::from_value::<Refusal>(self.body)
                .map_or_else(|_| "no details".to_owned(), |refusal| refusal.error);
            match self.retry_after {
                Some(secs) => bail!("{message} (HTTP {}, retry after {secs} s)", self.status),
                None => bail!("{message} (HTTP {})", self.status),
            }
        }
        self.json()
    }

    /// The body as a type of `api::contract`, whatever the status.
    pub fn json<T: DeserializeOwned>(&self) -> anyhow::Result<T> {
        T::deserialize(&self.body).with_context(|| {
            format!(
                "the daemon's answer does not read as {}: {}",
                std::any::type_name::<T>(),
                self.body
            )
        })
    }
}

fn parse_response(raw: &[u8]) -> anyhow::Result<ApiResponse> {
    let HttpResponse {
        status,
        retry_after,
        payload,
    } = parse_http(raw)?;
    let body = if payload.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&payload).context("the daemon answered with invalid JSON")?
    };
    Ok(ApiResponse {
        status,
        retry_after,
        body,
    })
}

/// An HTTP/1.1 response read to the end of its connection, its body de-chunked.
#[derive(Debug)]
pub struct HttpResponse {
    pub status: u16,
    pub retry_after: Option<u64>,
    pub payload: Vec<u8>,
}

pub fn parse_http(raw: &[u8]) -> anyhow::Result<HttpResponse> {
    let Some(head_end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        bail!("truncated HTTP response from the daemon");
    };
    let head = std::str::from_utf8(&raw[..head_end]).context("non-UTF-8 response head")?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .and_then(|code| code.parse().ok())
        .context("malformed HTTP status line")?;
    let mut chunked = false;
    let mut retry_after = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding") && value.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if name.eq_ignore_ascii_case("retry-after") {
            retry_after = value.parse().ok();
        }
    }
    let payload = &raw[head_end + 4..];
    let payload = if chunked {
        dechunk(payload)?
    } else {
        payload.to_vec()
    };
    Ok(HttpResponse {
        status,
        retry_after,
        payload,
    })
}

fn dechunk(mut data: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("truncated chunk size")?;
        let size_text = std::str::from_utf8(&data[..line_end])?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        if data.len() < size + 2 {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&data[..size]);
        data = &data[size + 2..];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_plain_and_chunked_responses() {
        let plain = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 5\r\ncontent-length: 13\r\n\r\n{\"error\":\"x\"}";
        let r = parse_response(plain).unwrap();
        assert_eq!((r.status, r.retry_after), (503, Some(5)));
        assert_eq!(r.body["error"], "x");
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\n{\"a\"\r\n4\r\n:12}\r\n0\r\n\r\n";
        assert_eq!(parse_response(chunked).unwrap().body["a"], 12);
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
    }
}
