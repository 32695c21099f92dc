//! W3C trace context (<https://www.w3.org/TR/trace-context/>): the ids that join a request's lines to
//! its caller's trace, shared by the relay (which reads a `traceparent` on every request) and the canary
//! (which sends one on every probe request).
//!
//! A `traceparent` is `VERSION-TRACE_ID-PARENT_ID-FLAGS` in lowercase hex (`00-` then 32, 16 and 2
//! digits). One that breaks any rule of the specification (version `ff`, an all-zero id, uppercase hex,
//! a wrong length, a version `00` with more parts) is not an error: [`TraceParent::parse`] says `None`
//! and the request starts a trace of its own. AWS X-Ray's `X-Amzn-Trace-Id` root
//! (`Root=1-67891233-abcdef012345678912345678`) is the same 128 bits written differently
//! ([`TraceId::from_xray_root`]).
//!
//! Must never: accept an id the specification calls invalid, or make an all-zero id.

use std::fmt;

/// A trace's id: 128 bits, never zero; written as 32 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(u128);

/// A span's id: 64 bits, never zero; written as 16 lowercase hex digits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(u64);

impl TraceId {
    /// The id with these 128 bits, unless they are all zero.
    pub fn from_u128(bits: u128) -> Option<Self> {
        nonzero(bits).map(Self)
    }

    pub fn as_u128(&self) -> u128 {
        self.0
    }

    /// A new random trace id (for a request that arrives without a valid `traceparent`).
    pub fn random() -> Self {
        Self(fastrand::u128(1..))
    }

    /// The id of an X-Ray trace root, `1-EPOCH8-RANDOM24` (its 32 hex digits are a W3C trace id).
    pub fn from_xray_root(root: &str) -> Option<Self> {
        let rest = root.strip_prefix("1-")?;
        let (epoch, random) = rest.split_once('-')?;
        if epoch.len() != 8 || random.len() != 24 {
            return None;
        }
        let high = u128::from(hex_u64(epoch)?);
        let low = hex_u128(random)?;
        Self::from_u128(high << 96 | low)
    }

    /// The 32 hex digits, on the stack: what a log line records, without the formatting machinery.
    pub fn hex(&self) -> Hex<32> {
        Hex::of(self.0)
    }
}

impl SpanId {
    /// The id with these 64 bits, unless they are all zero.
    pub fn from_u64(bits: u64) -> Option<Self> {
        nonzero(bits).map(Self)
    }

    pub fn as_u64(&self) -> u64 {
        self.0
    }

    /// A new random span id.
    pub fn random() -> Self {
        Self(fastrand::u64(1..))
    }

    /// The 16 hex digits, on the stack.
    pub fn hex(&self) -> Hex<16> {
        Hex::of(u128::from(self.0))
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex().as_str())
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.hex().as_str())
    }
}

/// The low `N` hex digits of a number, lowercase, zero-padded.
pub struct Hex<const N: usize>([u8; N]);

impl<const N: usize> Hex<N> {
    fn of(mut value: u128) -> Self {
        let mut digits = [b'0'; N];
        for digit in digits.iter_mut().rev() {
            *digit = b"0123456789abcdef"[(value & 0xf) as usize];
            value >>= 4;
        }
        Self(digits)
    }

    pub fn as_str(&self) -> &str {
        // Always ASCII hex digits.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// A valid `traceparent`: the caller's trace, and its span that this request is a child of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: TraceId,
    pub parent_id: SpanId,
    /// The caller's `sampled` flag (bit 0 of the flags).
    pub sampled: bool,
}

impl TraceParent {
    /// The header's value, if it follows the specification (see the module docs).
    pub fn parse(header: &str) -> Option<Self> {
        let header = header.trim_matches([' ', '\t']);
        let version = header.get(..2).filter(|v| is_lower_hex(v))?;
        if version == "ff" {
            return None;
        }
        // Version 00 has exactly four parts; a later version may append parts after a dash.
        let fixed = header.get(..55)?;
        let rest = &header[55..];
        if (version == "00" && !rest.is_empty()) || (!rest.is_empty() && !rest.starts_with('-')) {
            return None;
        }
        let mut parts = fixed.split('-');
        let (_, trace, parent, flags) =
            (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() || trace.len() != 32 || parent.len() != 16 || flags.len() != 2 {
            return None;
        }
        let flags = u8::try_from(hex_u64(flags)?).ok()?;
        Some(Self {
            trace_id: TraceId::from_u128(hex_u128(trace)?)?,
            parent_id: SpanId::from_u64(hex_u64(parent)?)?,
            sampled: flags & 1 == 1,
        })
    }
}

impl fmt::Display for TraceParent {
    /// The header's value: `00-TRACE_ID-PARENT_ID-FLAGS`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let flags = u8::from(self.sampled);
        write!(f, "00-{}-{}-{flags:02x}", self.trace_id, self.parent_id)
    }
}

/// A request's place in its trace: the caller's trace when its `traceparent` is valid, else the X-Ray
/// root's, else a new one; and a span id of the request's own. A malformed header is ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestTrace {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// The caller's span: a valid `traceparent`'s, else the X-Ray header's `Parent=` under its root.
    pub parent: Option<TraceParent>,
    /// The X-Ray trace root (`1-67891233-abcdef012345678912345678`), when one came with the request.
    pub xray_root: Option<String>,
}

impl RequestTrace {
    /// From the `traceparent` and `X-Amzn-Trace-Id` values, either possibly missing or malformed.
    pub fn of(traceparent: Option<&str>, xray: Option<&str>) -> Self {
        let xray_root = xray.and_then(xray_root).map(str::to_owned);
        let xray_trace = xray_root.as_deref().and_then(TraceId::from_xray_root);
        let parent = traceparent.and_then(TraceParent::parse).or_else(|| {
            let xray = xray?;
            Some(TraceParent {
                trace_id: xray_trace?,
                parent_id: xray_member(xray, "Parent=")
                    .filter(|id| id.len() == 16)
                    .and_then(hex_u64)
                    .and_then(SpanId::from_u64)?,
                sampled: xray_member(xray, "Sampled=") == Some("1"),
            })
        });
        let trace_id = parent
            .map(|p| p.trace_id)
            .or(xray_trace)
            .unwrap_or_else(TraceId::random);
        Self {
            trace_id,
            span_id: SpanId::random(),
            parent,
            xray_root,
        }
    }
}

/// The `Root=` of an `X-Amzn-Trace-Id` value (`Root=1-…;Parent=…;Sampled=1`), if it is a valid root.
pub fn xray_root(header: &str) -> Option<&str> {
    xray_member(header, "Root=").filter(|root| TraceId::from_xray_root(root).is_some())
}

/// The value of the member `name` (`Root=`, `Parent=`, ...) of an `X-Amzn-Trace-Id` value.
fn xray_member<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .find_map(|part| part.trim().strip_prefix(name))
}

fn is_lower_hex(text: &str) -> bool {
    text.bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn hex_u128(text: &str) -> Option<u128> {
    is_lower_hex(text)
        .then(|| u128::from_str_radix(text, 16).ok())
        .flatten()
}

fn hex_u64(text: &str) -> Option<u64> {
    is_lower_hex(text)
        .then(|| u64::from_str_radix(text, 16).ok())
        .flatten()
}

fn nonzero<T: PartialEq + Default>(value: T) -> Option<T> {
    (value != T::default()).then_some(value)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    const VALID: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_valid_traceparent_is_read_and_written_back_the_same() {
        let parent = TraceParent::parse(VALID).unwrap();
        assert_eq!(
            parent.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(parent.parent_id.to_string(), "00f067aa0ba902b7");
        assert!(parent.sampled);
        assert_eq!(parent.to_string(), VALID);
        let unsampled = TraceParent::parse(&VALID.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled);
        assert_eq!(TraceParent::parse(&format!(" {VALID}\t")), Some(parent));
        // A later version: its first four parts are read, what follows a dash is left alone.
        let later = format!("cc{}-what-comes-next", &VALID[2..]);
        assert_eq!(
            TraceParent::parse(&later).unwrap().trace_id,
            parent.trace_id
        );
    }

    #[test]
    fn every_malformed_traceparent_is_refused() {
        let malformed = [
            "",
            "00",
            "garbage",
            &VALID.replacen("00", "ff", 1), // version ff
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01", // all-zero trace id
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", // all-zero parent id
            &VALID.to_uppercase(),          // uppercase hex
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01", // uppercase trace id
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01", // trace id too short
            "00-4bf92f3577b34da6a3ce929d0e0e47366-00f067aa0ba902b7-01", // trace id too long
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b-01", // parent too short
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1", // flags too short
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", // 00 with more
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "cc-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x", // later version, no dash
            "0g-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // version not hex
            "00_4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7_01",  // wrong separators
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",  // flags not hex
            "00-+bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  // a sign
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902é-01",   // not ASCII
        ];
        for header in malformed {
            assert_eq!(TraceParent::parse(header), None, "{header:?}");
        }
    }

    #[test]
    fn new_ids_are_never_zero_and_written_at_full_width() {
        for _ in 0..1000 {
            let root = TraceParent {
                trace_id: TraceId::random(),
                parent_id: SpanId::random(),
                sampled: true,
            };
            assert_eq!(TraceParent::parse(&root.to_string()), Some(root));
            assert_eq!(SpanId::random().to_string().len(), 16);
        }
    }

    #[test]
    fn a_request_takes_the_callers_trace_else_the_xray_root_else_a_new_one() {
        const XRAY: &str = "Root=1-67891233-abcdef012345678912345678;Sampled=1";
        let both = RequestTrace::of(Some(VALID), Some(XRAY));
        assert_eq!(
            both.trace_id.to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(both.parent, TraceParent::parse(VALID));
        assert_ne!(Some(both.span_id), both.parent.map(|p| p.parent_id));
        assert_eq!(
            both.xray_root.as_deref(),
            Some("1-67891233-abcdef012345678912345678")
        );
        let xray = RequestTrace::of(Some("garbage"), Some(XRAY));
        assert_eq!(
            xray.trace_id.to_string(),
            "67891233abcdef012345678912345678"
        );
        assert_eq!(xray.parent, None, "an X-Ray header without a parent");
        let child = RequestTrace::of(None, Some(&format!("{XRAY};Parent=53995c3f42cd8ad8")));
        let parent = child.parent.unwrap();
        assert_eq!(parent.trace_id, xray.trace_id);
        assert_eq!(parent.parent_id.to_string(), "53995c3f42cd8ad8");
        assert!(parent.sampled);
        for bad in [
            "Parent=53995c3f42cd8ad",
            "Parent=0000000000000000",
            "Parent=53995C3F42CD8AD8",
        ] {
            assert_eq!(
                RequestTrace::of(None, Some(&format!("{XRAY};{bad}"))).parent,
                None
            );
        }
        let unsampled =
            "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=0";
        assert!(
            !RequestTrace::of(None, Some(unsampled))
                .parent
                .unwrap()
                .sampled
        );
        let fresh = RequestTrace::of(Some("ff-bad"), Some("Root=nonsense"));
        assert_eq!((fresh.parent, fresh.xray_root), (None, None));
        assert_ne!(fresh.trace_id, RequestTrace::of(None, None).trace_id);
    }

    #[test]
    fn an_xray_root_is_the_same_trace_id_written_differently() {
        let header = "Root=1-67891233-abcdef012345678912345678;Parent=53995c3f42cd8ad8;Sampled=1";
        let root = xray_root(header).unwrap();
        assert_eq!(root, "1-67891233-abcdef012345678912345678");
        assert_eq!(
            TraceId::from_xray_root(root).unwrap().to_string(),
            "67891233abcdef012345678912345678"
        );
        for bad in [
            "Root=2-67891233-abcdef012345678912345678",
            "Root=1-6789123-abcdef012345678912345678",
            "Root=1-67891233-ABCDEF012345678912345678",
            "Root=1-00000000-000000000000000000000000",
            "Parent=53995c3f42cd8ad8",
            "",
        ] {
            assert_eq!(xray_root(bad), None, "{bad}");
        }
    }
}
