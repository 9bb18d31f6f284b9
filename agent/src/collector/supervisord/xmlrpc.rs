//! The XML-RPC client of the supervisord collector: one `methodCall` POSTed over HTTP/1.1 to a
//! TCP (`http://`) or unix-socket (`unix://`) endpoint, as mattn/go-xmlrpc 0.0.3 does it for
//! node_exporter (10 s for the whole call, a non-2xx status is an error, basic auth from the
//! URL's user info as Go's HTTP client adds it), and a small reader of the reply's XML.
//!
//! The reader takes what XML-RPC servers (supervisord's Python `xmlrpc.client`) write:
//! elements, text with the predefined and numeric character entities, CDATA, comments and the
//! declaration skipped. Anything else is an error naming what was expected, never a panic.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use base64::Engine;

/// go-xmlrpc's client timeout.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// The largest reply read (supervisord's for a thousand programs is ≈ 1 MiB).
const MAX_REPLY: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum XmlRpcError {
    #[error("invalid URL {0:?}: {1}")]
    Url(String, &'static str),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    #[error("malformed HTTP reply: {0}")]
    Http(&'static str),
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("invalid response: {0}")]
    Xml(String),
    #[error("fault {code}: {message}")]
    Fault { code: i64, message: String },
}

/// Where the endpoint is.
#[derive(Debug, Clone, PartialEq)]
pub enum Endpoint {
    /// `host:port` to connect to, the `Host` header, the request target, basic auth.
    Tcp {
        address: String,
        host: String,
        target: String,
        auth: Option<String>,
    },
    /// node_exporter: "Fake the URI scheme as http" with `http://unix/RPC2`.
    Unix { path: String },
}

/// Percent-decodes user info as Go's url.Parse does (invalid escapes are an error).
fn unescape(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint, XmlRpcError> {
        let bad = |why| XmlRpcError::Url(url.to_string(), why);
        let (scheme, rest) = url.split_once(':').ok_or_else(|| bad("no scheme"))?;
        match scheme.to_ascii_lowercase().as_str() {
            "unix" => {
                // url.Parse's Path: after an authority if there is one.
                let path = match rest.strip_prefix("//") {
                    Some(after) => after.find('/').map(|i| &after[i..]).unwrap_or(""),
                    None => rest,
                };
                let path = path.split(['?', '#']).next().unwrap_or("");
                Ok(Endpoint::Unix {
                    path: unescape(path).ok_or_else(|| bad("bad escape in path"))?,
                })
            }
            "http" => {
                let rest = rest.strip_prefix("//").ok_or_else(|| bad("no host"))?;
                let rest = rest.split('#').next().unwrap_or("");
                let end = rest.find(['/', '?']).unwrap_or(rest.len());
                let (authority, target) = rest.split_at(end);
                let target = match target {
                    "" => "/".to_string(),
                    t if t.starts_with('?') => format!("/{t}"),
                    t => t.to_string(),
                };
                let (auth, host) = match authority.rsplit_once('@') {
                    Some((info, host)) => {
                        let (user, pass) = info.split_once(':').unwrap_or((info, ""));
                        let user = unescape(user).ok_or_else(|| bad("bad escape in user"))?;
                        let pass = unescape(pass).ok_or_else(|| bad("bad escape in password"))?;
                        let token = base64::engine::general_purpose::STANDARD
                            .encode(format!("{user}:{pass}"));
                        (Some(token), host)
                    }
                    None => (None, authority),
                };
                if host.is_empty() {
                    return Err(bad("no host"));
                }
                let has_port = match host.rfind(']') {
                    Some(close) => host[close..].contains(':'),
                    None => host.contains(':'),
                };
                let address = if has_port {
                    host.to_string()
                } else {
                    format!("{host}:80")
                };
                Ok(Endpoint::Tcp {
                    address,
                    host: host.to_string(),
                    target,
                    auth,
                })
            }
            "https" => Err(bad(
                "https is not supported (supervisord serves plain HTTP)",
            )),
            _ => Err(bad("unsupported scheme")),
        }
    }
}

/// A reply value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Int(i64),
    Bool(bool),
    Double(f64),
    Str(String),
    Array(Vec<Value>),
    Struct(Vec<(String, Value)>),
    Nil,
}

/// Calls `method` (no parameters) at `endpoint` and returns the reply's value.
pub fn call(endpoint: &Endpoint, method: &str) -> Result<Value, XmlRpcError> {
    let deadline = Instant::now() + TIMEOUT;
    let body = format!(
        "<?xml version=\"1.0\"?><methodCall><methodName>{}</methodName><params></params></methodCall>",
        escape(method)
    );
    let (host, target, auth) = match endpoint {
        Endpoint::Tcp {
            host, target, auth, ..
        } => (host.as_str(), target.as_str(), auth.as_deref()),
        Endpoint::Unix { .. } => ("unix", "/RPC2", None),
    };
    let mut request = format!(
        "POST {target} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: Go-http-client/1.1\r\n\
         Content-Length: {}\r\nContent-Type: text/xml\r\nConnection: close\r\n",
        body.len()
    );
    if let Some(token) = auth {
        request.push_str(&format!("Authorization: Basic {token}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    let reply = match endpoint {
        Endpoint::Tcp { address, .. } => {
            let addrs = std::net::ToSocketAddrs::to_socket_addrs(address.as_str())?;
            let mut last = None;
            let mut stream = None;
            for addr in addrs {
                let left = remaining(deadline)?;
                match TcpStream::connect_timeout(&addr, left) {
                    Ok(s) => {
                        stream = Some(s);
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            let stream = match (stream, last) {
                (Some(s), _) => s,
                (None, Some(e)) => return Err(e.into()),
                (None, None) => {
                    return Err(XmlRpcError::Url(address.clone(), "resolves to nothing"));
                }
            };
            exchange(stream, request.as_bytes(), deadline)?
        }
        Endpoint::Unix { path } => {
            let stream = UnixStream::connect(path)?;
            exchange(stream, request.as_bytes(), deadline)?
        }
    };
    let body = http_body(&reply)?;
    let text = std::str::from_utf8(&body).map_err(|_| XmlRpcError::Xml("not UTF-8".into()))?;
    parse_response(text)
}

fn remaining(deadline: Instant) -> Result<Duration, XmlRpcError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(XmlRpcError::Timeout(TIMEOUT));
    }
    Ok(left)
}

/// A stream the call can bound in time.
trait Timed: Read + Write {
    fn timeouts(&self, d: Duration) -> std::io::Result<()>;
}
impl Timed for TcpStream {
    fn timeouts(&self, d: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}
impl Timed for UnixStream {
    fn timeouts(&self, d: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(d))?;
        self.set_write_timeout(Some(d))
    }
}

/// Sends `request` and reads the whole reply (the server closes: `Connection: close`).
fn exchange(
    mut stream: impl Timed,
    request: &[u8],
    deadline: Instant,
) -> Result<Vec<u8>, XmlRpcError> {
    let timed_out = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            XmlRpcError::Timeout(TIMEOUT)
        }
        _ => XmlRpcError::Io(e),
    };
    stream.timeouts(remaining(deadline)?)?;
    stream.write_all(request).map_err(timed_out)?;
    let mut reply = Vec::with_capacity(16 << 10);
    let mut chunk = [0u8; 16 << 10];
    loop {
        stream.timeouts(remaining(deadline)?)?;
        let n = stream.read(&mut chunk).map_err(timed_out)?;
        if n == 0 {
            return Ok(reply);
        }
        if reply.len() + n > MAX_REPLY {
            return Err(XmlRpcError::Http("reply too large"));
        }
        reply.extend_from_slice(&chunk[..n]);
        // A complete reply with a length need not wait for the close.
        if let Ok(Some(_)) = complete_body(&reply) {
            return Ok(reply);
        }
    }
}

/// The end of the header block and the parsed status and body framing, once the headers are in.
fn headers(reply: &[u8]) -> Result<Option<(usize, u16, Framing)>, XmlRpcError> {
    let Some(end) = reply.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = std::str::from_utf8(&reply[..end]).map_err(|_| XmlRpcError::Http("headers"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(XmlRpcError::Http("status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or(XmlRpcError::Http("status code"))?;
    let mut framing = Framing::UntilClose;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Err(XmlRpcError::Http("header line"));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("transfer-encoding")
            && value.to_ascii_lowercase().contains("chunked")
        {
            framing = Framing::Chunked;
        } else if name.eq_ignore_ascii_case("content-length") && framing != Framing::Chunked {
            let n = value
                .parse()
                .map_err(|_| XmlRpcError::Http("content-length"))?;
            framing = Framing::Length(n);
        }
    }
    Ok(Some((end + 4, status, framing)))
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// The body once the reply holds all of it (`None`: more to read).
fn complete_body(reply: &[u8]) -> Result<Option<Vec<u8>>, XmlRpcError> {
    let Some((start, _, framing)) = headers(reply)? else {
        return Ok(None);
    };
    let rest = &reply[start..];
    match framing {
        Framing::Length(n) => Ok((rest.len() >= n).then(|| rest[..n].to_vec())),
        Framing::Chunked => dechunk(rest),
        Framing::UntilClose => Ok(None),
    }
}

/// Decodes a chunked body; `None` until the last chunk is in.
fn dechunk(mut rest: &[u8]) -> Result<Option<Vec<u8>>, XmlRpcError> {
    let mut body = Vec::new();
    loop {
        let Some(eol) = rest.windows(2).position(|w| w == b"\r\n") else {
            return Ok(None);
        };
        let size_line =
            std::str::from_utf8(&rest[..eol]).map_err(|_| XmlRpcError::Http("chunk"))?;
        let size_hex = size_line.split(';').next().unwrap_or("").trim();
        let size =
            usize::from_str_radix(size_hex, 16).map_err(|_| XmlRpcError::Http("chunk size"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(Some(body));
        }
        if rest.len() < size + 2 {
            return Ok(None);
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

/// The body of a whole reply; a non-2xx status is an error (go-xmlrpc).
fn http_body(reply: &[u8]) -> Result<std::borrow::Cow<'_, [u8]>, XmlRpcError> {
    let (start, status, framing) = headers(reply)?.ok_or(XmlRpcError::Http("no headers"))?;
    if status / 100 != 2 {
        return Err(XmlRpcError::Status(status));
    }
    let rest = &reply[start..];
    match framing {
        Framing::Length(n) if rest.len() >= n => Ok(rest[..n].into()),
        Framing::Length(_) => Err(XmlRpcError::Http("truncated body")),
        Framing::UntilClose => Ok(rest.into()),
        Framing::Chunked => dechunk(rest)?
            .map(Into::into)
            .ok_or(XmlRpcError::Http("truncated chunked body")),
    }
}

fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '&' => out.push_str("&amp;"),
            c => out.push(c),
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Start(String),
    End(String),
    Text(String),
}

/// Splits XML into start tags, end tags and (unescaped) text; `<a/>` is a start and an end.
fn tokens(xml: &str) -> Result<Vec<Token>, XmlRpcError> {
    let bad = |what: &str| XmlRpcError::Xml(what.to_string());
    let mut out = Vec::new();
    let mut rest = xml;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<![CDATA[") {
            let end = after.find("]]>").ok_or_else(|| bad("unterminated CDATA"))?;
            out.push(Token::Text(after[..end].to_string()));
            rest = &after[end + 3..];
        } else if let Some(after) = rest.strip_prefix("<!--") {
            let end = after
                .find("-->")
                .ok_or_else(|| bad("unterminated comment"))?;
            rest = &after[end + 3..];
        } else if rest.starts_with("<?") || rest.starts_with("<!") {
            let end = rest
                .find('>')
                .ok_or_else(|| bad("unterminated declaration"))?;
            rest = &rest[end + 1..];
        } else if let Some(after) = rest.strip_prefix('<') {
            let end = after.find('>').ok_or_else(|| bad("unterminated tag"))?;
            let tag = &after[..end];
            rest = &after[end + 1..];
            if let Some(name) = tag.strip_prefix('/') {
                out.push(Token::End(name.trim().to_string()));
            } else {
                let (tag, closed) = match tag.strip_suffix('/') {
                    Some(t) => (t, true),
                    None => (tag, false),
                };
                let name = tag
                    .split_whitespace()
                    .next()
                    .ok_or_else(|| bad("empty tag"))?;
                out.push(Token::Start(name.to_string()));
                if closed {
                    out.push(Token::End(name.to_string()));
                }
            }
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            out.push(Token::Text(unescape_text(&rest[..end])?));
            rest = &rest[end..];
        }
    }
    Ok(out)
}

fn unescape_text(text: &str) -> Result<String, XmlRpcError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after
            .find(';')
            .ok_or_else(|| XmlRpcError::Xml("unterminated entity".into()))?;
        let entity = &after[..semi];
        let c = match entity {
            "lt" => '<',
            "gt" => '>',
            "amp" => '&',
            "quot" => '"',
            "apos" => '\'',
            e => {
                let code = if let Some(hex) = e.strip_prefix("#x").or_else(|| e.strip_prefix("#X"))
                {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = e.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| XmlRpcError::Xml(format!("unknown entity &{e};")))?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Reads tokens, skipping whitespace-only text between elements.
struct Reader {
    tokens: std::vec::IntoIter<Token>,
    peeked: Option<Token>,
}

impl Reader {
    fn next(&mut self) -> Option<Token> {
        self.peeked.take().or_else(|| self.tokens.next())
    }

    fn next_element(&mut self) -> Option<Token> {
        loop {
            match self.next()? {
                Token::Text(t) if t.trim().is_empty() => continue,
                other => return Some(other),
            }
        }
    }

    fn peek_element(&mut self) -> Option<&Token> {
        if self.peeked.is_none() {
            self.peeked = self.next_element();
        }
        self.peeked.as_ref()
    }

    fn start(&mut self, name: &str) -> Result<(), XmlRpcError> {
        match self.next_element() {
            Some(Token::Start(n)) if n == name => Ok(()),
            other => Err(XmlRpcError::Xml(format!(
                "expected <{name}>, got {other:?}"
            ))),
        }
    }

    fn end(&mut self, name: &str) -> Result<(), XmlRpcError> {
        match self.next_element() {
            Some(Token::End(n)) if n == name => Ok(()),
            other => Err(XmlRpcError::Xml(format!(
                "expected </{name}>, got {other:?}"
            ))),
        }
    }

    /// The text up to `</name>` (the start tag already read).
    fn text(&mut self, name: &str) -> Result<String, XmlRpcError> {
        let mut text = String::new();
        loop {
            match self.next() {
                Some(Token::Text(t)) => text.push_str(&t),
                Some(Token::End(n)) if n == name => return Ok(text),
                other => {
                    return Err(XmlRpcError::Xml(format!(
                        "expected text in <{name}>, got {other:?}"
                    )));
                }
            }
        }
    }

    /// A `<value>…</value>` (its start tag already read).
    fn value(&mut self) -> Result<Value, XmlRpcError> {
        let bad = |what: String| XmlRpcError::Xml(what);
        // An untyped value is a string.
        let first = self.next();
        let kind = match first {
            Some(Token::Start(kind)) => kind,
            Some(Token::End(n)) if n == "value" => return Ok(Value::Str(String::new())),
            Some(Token::Text(t)) => {
                match self.peek_element() {
                    Some(Token::Start(_)) if t.trim().is_empty() => {
                        let Some(Token::Start(kind)) = self.next_element() else {
                            unreachable!("peeked a start tag")
                        };
                        return self.typed(kind);
                    }
                    _ => {}
                }
                let rest = self.text("value")?;
                return Ok(Value::Str(t + &rest));
            }
            other => return Err(bad(format!("expected a value, got {other:?}"))),
        };
        self.typed(kind)
    }

    /// A typed value whose type tag `<kind>` was read; consumes up to `</value>`.
    fn typed(&mut self, kind: String) -> Result<Value, XmlRpcError> {
        let bad = |what: String| XmlRpcError::Xml(what);
        let value = match kind.as_str() {
            "string" => Value::Str(self.text("string")?),
            "int" | "i1" | "i2" | "i4" | "i8" => {
                let text = self.text(&kind)?;
                Value::Int(
                    text.trim()
                        .parse()
                        .map_err(|_| bad(format!("bad <{kind}> {text:?}")))?,
                )
            }
            "boolean" => match self.text("boolean")?.trim() {
                "1" | "true" => Value::Bool(true),
                "0" | "false" => Value::Bool(false),
                other => return Err(bad(format!("invalid boolean value {other:?}"))),
            },
            "double" => {
                let text = self.text("double")?;
                Value::Double(
                    text.trim()
                        .parse()
                        .map_err(|_| bad(format!("bad <double> {text:?}")))?,
                )
            }
            "dateTime.iso8601" | "base64" => Value::Str(self.text(&kind)?),
            "nil" => {
                self.end("nil")?;
                Value::Nil
            }
            "array" => {
                self.start("data")?;
                let mut items = Vec::new();
                loop {
                    match self.next_element() {
                        Some(Token::Start(n)) if n == "value" => items.push(self.value()?),
                        Some(Token::End(n)) if n == "data" => break,
                        other => return Err(bad(format!("expected <value>, got {other:?}"))),
                    }
                }
                self.end("array")?;
                Value::Array(items)
            }
            "struct" => {
                let mut members = Vec::new();
                loop {
                    match self.next_element() {
                        Some(Token::Start(n)) if n == "member" => {
                            self.start("name")?;
                            let name = self.text("name")?;
                            self.start("value")?;
                            let value = self.value()?;
                            self.end("member")?;
                            members.push((name, value));
                        }
                        Some(Token::End(n)) if n == "struct" => break,
                        other => return Err(bad(format!("expected <member>, got {other:?}"))),
                    }
                }
                Value::Struct(members)
            }
            other => return Err(bad(format!("unknown value type <{other}>"))),
        };
        self.end("value")?;
        Ok(value)
    }
}

/// A `methodResponse`: its one parameter, or its fault as an error.
pub fn parse_response(xml: &str) -> Result<Value, XmlRpcError> {
    let mut r = Reader {
        tokens: tokens(xml)?.into_iter(),
        peeked: None,
    };
    r.start("methodResponse")?;
    match r.next_element() {
        Some(Token::Start(n)) if n == "params" => {
            r.start("param")?;
            r.start("value")?;
            r.value()
        }
        Some(Token::Start(n)) if n == "fault" => {
            r.start("value")?;
            let fault = r.value()?;
            let member = |key: &str| match &fault {
                Value::Struct(m) => m.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone()),
                _ => None,
            };
            let code = match member("faultCode") {
                Some(Value::Int(c)) => c,
                _ => 0,
            };
            let message = match member("faultString") {
                Some(Value::Str(s)) => s,
                _ => String::new(),
            };
            Err(XmlRpcError::Fault { code, message })
        }
        other => Err(XmlRpcError::Xml(format!("missing params, got {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            Endpoint::parse("http://localhost:9001/RPC2").unwrap(),
            Endpoint::Tcp {
                address: "localhost:9001".into(),
                host: "localhost:9001".into(),
                target: "/RPC2".into(),
                auth: None
            }
        );
        assert_eq!(
            Endpoint::parse("http://user:p%40ss@[::1]/RPC2?x=1").unwrap(),
            Endpoint::Tcp {
                address: "[::1]:80".into(),
                host: "[::1]".into(),
                target: "/RPC2?x=1".into(),
                auth: Some(base64::engine::general_purpose::STANDARD.encode("user:p@ss"))
            }
        );
        assert_eq!(
            Endpoint::parse("unix:///run/supervisor.sock").unwrap(),
            Endpoint::Unix {
                path: "/run/supervisor.sock".into()
            }
        );
        assert_eq!(
            Endpoint::parse("unix:/tmp/s.sock").unwrap(),
            Endpoint::Unix {
                path: "/tmp/s.sock".into()
            }
        );
        assert!(Endpoint::parse("https://localhost/RPC2").is_err());
        assert!(Endpoint::parse("localhost:9001").is_err());
        assert!(Endpoint::parse("http:///RPC2").is_err());
    }

    #[test]
    fn responses() {
        let xml = "<?xml version='1.0'?>\n<methodResponse>\n<params>\n<param>\n<value><array><data>\n\
                   <value><struct>\n<member>\n<name>name</name>\n<value><string>a &amp; b&#x21;</string></value>\n</member>\n\
                   <member>\n<name>pid</name>\n<value><int>42</int></value>\n</member>\n\
                   <member>\n<name>ok</name>\n<value><boolean>1</boolean></value>\n</member>\n\
                   <member>\n<name>plain</name>\n<value>text</value>\n</member>\n\
                   <member>\n<name>empty</name>\n<value><string/></value>\n</member>\n\
                   </struct></value>\n</data></array></value>\n</param>\n</params>\n</methodResponse>\n";
        assert_eq!(
            parse_response(xml).unwrap(),
            Value::Array(vec![Value::Struct(vec![
                ("name".into(), Value::Str("a & b!".into())),
                ("pid".into(), Value::Int(42)),
                ("ok".into(), Value::Bool(true)),
                ("plain".into(), Value::Str("text".into())),
                ("empty".into(), Value::Str(String::new())),
            ])])
        );
        let fault = "<?xml version='1.0'?><methodResponse><fault><value><struct>\
                     <member><name>faultCode</name><value><int>1</int></value></member>\
                     <member><name>faultString</name><value><string>UNKNOWN_METHOD</string></value></member>\
                     </struct></value></fault></methodResponse>";
        assert_eq!(
            parse_response(fault).unwrap_err().to_string(),
            "fault 1: UNKNOWN_METHOD"
        );
        for bad in [
            "",
            "<methodResponse>",
            "<methodResponse><params><param><value><int>x</int></value></param></params></methodResponse>",
            "<methodResponse><params><param><value><array><data><value><int>1</int></value>",
            "<methodResponse><params><param><value><string>&bogus;</string></value></param></params></methodResponse>",
            "<a><b",
        ] {
            assert!(parse_response(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn http_framing() {
        let reply = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
        assert_eq!(&*http_body(reply).unwrap(), b"hello");
        assert_eq!(complete_body(reply).unwrap().unwrap(), b"hello");
        assert!(
            complete_body(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhello")
                .unwrap()
                .is_none()
        );
        let chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhel\r\n2\r\nlo\r\n0\r\n\r\n";
        assert_eq!(complete_body(chunked).unwrap().unwrap(), b"hello");
        assert!(matches!(
            http_body(b"HTTP/1.0 401 Unauthorized\r\n\r\n"),
            Err(XmlRpcError::Status(401))
        ));
        assert!(http_body(b"garbage\r\n\r\n").is_err());
    }
}
