//! RFC 1035 text records: one record from a line (the `template` plugin's output) and whole
//! zone files (the `file` plugin), parsed with hickory-proto's zone-file parser. A zone file
//! error names the line where the faulty record starts. Used by the plugins and by the Corefile
//! loader's checks, so it sits beside both rather than under `plugins/`.

use std::collections::BTreeMap;

use hickory_proto::rr::{Name, Record, RecordSet, RecordType, RrKey};
use hickory_proto::serialize::txt::Parser;

/// The TTL of a record written without one (as Go's `dns.NewRR` assumes).
pub(crate) const DEFAULT_TTL: u32 = 3600;

/// Parses one resource record in zone-file syntax (`NAME [TTL] [CLASS] TYPE RDATA`); relative
/// names are taken as absolute (origin `.`), a missing TTL is 3600.
pub(crate) fn parse_rr(text: &str) -> Result<Record, String> {
    if text.trim_start().starts_with('$') {
        return Err(format!("{text:?} is a directive, not a resource record"));
    }
    if text.contains('\n') {
        return Err(format!("{text:?} spans more than one line"));
    }
    let input = format!("$TTL {DEFAULT_TTL}\n{text}\n");
    let (_, records) = Parser::new(input, None, Some(Name::root()))
        .parse()
        .map_err(|e| format!("{text:?} is not a resource record: {e}"))?;
    let mut all: Vec<Record> = records
        .into_values()
        .flat_map(|rs| rs.records_without_rrsigs().cloned().collect::<Vec<_>>())
        .collect();
    match all.len() {
        1 => Ok(all.remove(0)),
        0 => Err(format!("{text:?} holds no resource record")),
        n => Err(format!("{text:?} holds {n} resource records, expected one")),
    }
}

/// A parsed zone file: its origin and record sets.
pub(crate) type ParsedZone = (Name, BTreeMap<RrKey, RecordSet>);

/// Parentheses depth change of a zone-file line (comments and quoted text ignored).
fn paren_delta(line: &str) -> i32 {
    let mut d = 0;
    let mut quoted = false;
    let mut escaped = false;
    for c in line.chars() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => break,
            '(' if !quoted => d += 1,
            ')' if !quoted => d -= 1,
            _ => {}
        }
    }
    d
}

fn parse_text(text: &str, origin: &Name) -> Result<ParsedZone, String> {
    Parser::new(text.to_string(), None, Some(origin.clone()))
        .parse()
        .map_err(|e| e.to_string())
}

/// Parses a zone file for `origin`. `$INCLUDE` is refused (CoreDNS's file plugin does not
/// allow it either). An error says which line's record is at fault.
pub(crate) fn parse_zone(text: &str, origin: &Name) -> Result<ParsedZone, String> {
    let lines: Vec<&str> = text.lines().collect();
    for (i, l) in lines.iter().enumerate() {
        if l.trim_start()
            .get(..8)
            .is_some_and(|w| w.eq_ignore_ascii_case("$INCLUDE"))
        {
            return Err(format!("line {}: $INCLUDE is not supported", i + 1));
        }
    }
    let whole = match parse_text(text, origin) {
        Ok(z) => return Ok(z),
        Err(e) => e,
    };
    // Find the first record whose addition makes the text fail: prefixes ending where
    // parentheses are balanced, searched by bisection (a failing prefix fails when extended).
    let mut ends = Vec::new();
    let mut starts = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, l) in lines.iter().enumerate() {
        if depth == 0 {
            start = i;
        }
        depth += paren_delta(l);
        if depth <= 0 {
            depth = 0;
            ends.push(i + 1);
            starts.push(start);
        }
    }
    let fails = |k: usize| parse_text(&(lines[..k].join("\n") + "\n"), origin).is_err();
    let (mut lo, mut hi) = (0usize, ends.len());
    while lo < hi {
        let mid = (lo + hi) / 2;
        if fails(ends[mid]) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    match (starts.get(lo), ends.get(lo)) {
        (Some(&s), Some(&e)) if e > s + 1 => Err(format!("lines {}-{e}: {whole}", s + 1)),
        (Some(&s), Some(_)) => Err(format!("line {}: {whole}", s + 1)),
        _ => Err(format!(
            "line {}: unbalanced parentheses: {whole}",
            start + 1
        )),
    }
}

/// Checks a zone file for `origin` as the `file` plugin will load it, at Corefile load before
/// any plugin exists: it parses, every record is inside the origin, and the apex has an SOA.
/// The messages are those of `plugins::file::ZoneData::parse` (a test keeps them equal).
pub(crate) fn validate_zone(text: &str, origin: &Name) -> Result<(), String> {
    let (_, sets) = parse_zone(text, origin)?;
    let lower = |n: &Name| {
        let mut s = n.to_lowercase().to_ascii();
        if !s.ends_with('.') {
            s.push('.');
        }
        s
    };
    let origin_l = lower(origin);
    let mut apex_soa = false;
    for set in sets.values() {
        for r in set.records_without_rrsigs() {
            if !origin.zone_of(&r.name) {
                return Err(format!(
                    "out of zone data: {} is not in {origin_l}",
                    lower(&r.name)
                ));
            }
            apex_soa |= r.record_type() == RecordType::SOA && lower(&r.name) == origin_l;
        }
    }
    if !apex_soa {
        return Err(format!("no SOA record at the apex {origin_l}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::rr::{DNSClass, RData, RecordType};

    #[test]
    fn one_record() {
        let r = parse_rr("example.net 60 IN CNAME target.example.com").unwrap();
        assert_eq!(r.name.to_ascii(), "example.net.");
        assert_eq!(r.ttl, 60);
        assert_eq!(r.record_type(), RecordType::CNAME);
        let r = parse_rr("example. IN NS ns0.example.com.").unwrap();
        assert_eq!(r.ttl, DEFAULT_TTL);
        let r = parse_rr("coredns.invalid. 60 CH TXT \"test\"").unwrap();
        assert_eq!(r.dns_class, DNSClass::CH);
        let r = parse_rr("invalid. 60 IN SOA a.invalid. b.invalid. (1 60 60 60 60)").unwrap();
        assert!(matches!(r.data, RData::SOA(_)));
        for bad in [
            "test.example.",
            "",
            "a. 60 IN A 300.1.1.1",
            "$ORIGIN example.",
        ] {
            assert!(parse_rr(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Random zone files from zone-file pieces parse or fail with a message naming a line;
    /// nothing panics.
    #[test]
    fn random_zones_never_panic() {
        const PIECES: &[&str] = &[
            "@", " ", "\n", "IN", "SOA", "ns", "h", "1", "2", "60", "A", "10.0.0.1", "AAAA", "::1",
            "(", ")", ";c", "\"", "$TTL", "$ORIGIN", "x.", "*", "CNAME", "MX", "TXT", "\\", "300",
            "NS", "SRV", "0", "www",
        ];
        let origin = Name::from_ascii("example.org.").unwrap();
        let mut rng = fastrand::Rng::with_seed(4592);
        for _ in 0..600 {
            let n = rng.usize(1..40);
            let text: String = (0..n).map(|_| PIECES[rng.usize(..PIECES.len())]).collect();
            if let Err(e) = parse_zone(&text, &origin) {
                assert!(e.starts_with("line"), "{text:?}: {e}");
            }
            let line = text.replace('\n', " ");
            if let Err(e) = parse_rr(&line) {
                assert!(!e.is_empty());
            }
        }
    }

    #[test]
    fn zone_errors_name_the_line() {
        let origin = Name::from_ascii("example.org.").unwrap();
        let good = "$TTL 300\n@ IN SOA ns hostmaster (\n 1 ; serial\n 7200 3600 1209600 300 )\n@ IN NS ns\nns IN A 192.0.2.1\n";
        let (o, rs) = parse_zone(good, &origin).unwrap();
        assert_eq!(o, origin);
        assert_eq!(rs.len(), 3);
        let bad = format!("{good}www IN A 192.0.2.300\nmail IN A 192.0.2.3\n");
        let e = parse_zone(&bad, &origin).unwrap_err();
        assert!(e.starts_with("line 7:"), "{e}");
        let e = parse_zone("$INCLUDE /etc/passwd\n", &origin).unwrap_err();
        assert!(e.contains("line 1: $INCLUDE"), "{e}");
    }

    /// The Corefile loader's check accepts and rejects exactly what the plugin's loader does,
    /// with the same message.
    #[test]
    fn validate_zone_agrees_with_the_file_plugin() {
        let soa = "@ 3600 IN SOA ns.example.org. admin.example.org. 1 7200 3600 1209600 3600\n";
        let cases = [
            format!("{soa}www 60 IN A 10.0.0.1\nsub.deep 60 IN TXT \"x\"\n"),
            format!("{soa}www.other.org. 60 IN A 10.0.0.1\n"),
            "www 60 IN A 10.0.0.1\n".to_string(),
            "sub 60 IN SOA ns.example.org. a.example.org. 1 2 3 4 5\n".to_string(),
            format!("{soa}www 60 IN A 999.0.0.1\n"),
            format!("{soa}$INCLUDE other.zone\n"),
            format!("{soa}WWW.Example.ORG. 60 IN A 10.0.0.2\n"),
        ];
        let origin = Name::from_ascii("example.org.").unwrap();
        for text in &cases {
            let plugin = crate::dns::plugins::file::ZoneData::parse(text, &origin).map(|_| ());
            assert_eq!(validate_zone(text, &origin), plugin, "{text}");
        }
        let root = Name::root();
        let text = format!("{soa}www.example.org. 60 IN A 10.0.0.1\n");
        let plugin = crate::dns::plugins::file::ZoneData::parse(&text, &root).map(|_| ());
        assert_eq!(validate_zone(&text, &root), plugin);
    }
}
