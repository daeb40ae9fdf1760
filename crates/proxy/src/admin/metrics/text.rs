//! The Prometheus text format (version 0.0.4), written straight into a
//! byte buffer: no metric objects, no label strings allocated per sample.

use std::io::Write;

use crate::stats::LATENCY_BUCKETS;

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// The samples of one family, written into `buf`; the family's `# HELP`
/// and `# TYPE` lines go before its first sample (a family without any
/// sample is left out, as the format wants).
pub(super) struct Lines<'a> {
    pub(super) buf: &'a mut Vec<u8>,
    pub(super) name: &'static str,
    pub(super) help: &'static str,
    pub(super) kind: Kind,
    /// Whether the header was written (kept by the caller across the
    /// calls that write one family).
    pub(super) headed: &'a mut bool,
}

impl Lines<'_> {
    fn head(&mut self) {
        if !*self.headed {
            *self.headed = true;
            let _ = writeln!(self.buf, "# HELP {} {}", self.name, self.help);
            let _ = writeln!(self.buf, "# TYPE {} {}", self.name, self.kind.name());
        }
    }

    fn series(&mut self, suffix: &str, labels: &[(&str, &str)], extra: Option<(&str, &str)>) {
        self.buf.extend_from_slice(self.name.as_bytes());
        self.buf.extend_from_slice(suffix.as_bytes());
        if labels.is_empty() && extra.is_none() {
            return;
        }
        self.buf.push(b'{');
        for (i, (k, v)) in labels.iter().chain(extra.as_ref()).enumerate() {
            if i > 0 {
                self.buf.push(b',');
            }
            self.buf.extend_from_slice(k.as_bytes());
            self.buf.extend_from_slice(b"=\"");
            escape(self.buf, v);
            self.buf.push(b'"');
        }
        self.buf.push(b'}');
    }

    /// One sample of a counter or a gauge.
    pub(super) fn sample(&mut self, labels: &[(&str, &str)], value: f64) {
        self.head();
        self.series("", labels, None);
        self.buf.push(b' ');
        number(self.buf, value);
        self.buf.push(b'\n');
    }

    /// A counter's or a gauge's sample of a whole number.
    pub(super) fn int(&mut self, labels: &[(&str, &str)], value: u64) {
        self.head();
        self.series("", labels, None);
        let _ = writeln!(self.buf, " {value}");
    }

    /// A flag: 1 or 0.
    pub(super) fn flag(&mut self, labels: &[(&str, &str)], on: bool) {
        self.int(labels, u64::from(on));
    }

    /// One histogram: cumulative counts per bucket of [`LATENCY_BUCKETS`],
    /// the count and the sum.
    pub(super) fn histogram(
        &mut self,
        labels: &[(&str, &str)],
        cumulative: &[u64; LATENCY_BUCKETS.len()],
        count: u64,
        sum: f64,
    ) {
        self.head();
        let mut le = String::with_capacity(8);
        for (bound, n) in LATENCY_BUCKETS.iter().zip(cumulative) {
            le.clear();
            let _ = write!(le, "{bound}");
            self.series("_bucket", labels, Some(("le", &le)));
            let _ = writeln!(self.buf, " {n}");
        }
        self.series("_bucket", labels, Some(("le", "+Inf")));
        let _ = writeln!(self.buf, " {count}");
        self.series("_sum", labels, None);
        self.buf.push(b' ');
        number(self.buf, sum);
        self.buf.push(b'\n');
        self.series("_count", labels, None);
        let _ = writeln!(self.buf, " {count}");
    }
}

use std::fmt::Write as _;

/// A label value, escaped as the format wants (`\`, `"`, newline).
fn escape(buf: &mut Vec<u8>, v: &str) {
    for b in v.bytes() {
        match b {
            b'\\' => buf.extend_from_slice(b"\\\\"),
            b'"' => buf.extend_from_slice(b"\\\""),
            b'\n' => buf.extend_from_slice(b"\\n"),
            _ => buf.push(b),
        }
    }
}

/// A sample value: whole numbers without a fraction, infinities and NaN
/// as the format spells them.
fn number(buf: &mut Vec<u8>, v: f64) {
    if v.is_nan() {
        buf.extend_from_slice(b"NaN");
    } else if v.is_infinite() {
        buf.extend_from_slice(if v > 0.0 { b"+Inf" } else { b"-Inf" });
    } else {
        let _ = std::io::Write::write_fmt(buf, format_args!("{v}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `write` writes into a family of `kind`.
    fn written(kind: Kind, write: impl FnOnce(&mut Lines<'_>)) -> String {
        let (mut buf, mut headed) = (Vec::new(), false);
        write(&mut Lines {
            buf: &mut buf,
            name: "rvs_x",
            help: "An example.",
            kind,
            headed: &mut headed,
        });
        String::from_utf8(buf).unwrap_or_default()
    }

    #[test]
    fn samples_are_written_as_the_text_format_wants() {
        let text = written(Kind::Counter, |l| {
            l.int(&[("service", "a\"b\\c\nd"), ("proto", "tcp")], 7);
            l.sample(&[], 0.25);
            l.sample(&[("x", "y")], f64::INFINITY);
            l.flag(&[], true);
        });
        assert_eq!(
            text,
            "# HELP rvs_x An example.\n# TYPE rvs_x counter\nrvs_x{service=\"a\\\"b\\\\c\\nd\",proto=\"tcp\"} 7\nrvs_x 0.25\nrvs_x{x=\"y\"} +Inf\nrvs_x 1\n"
        );
        assert_eq!(written(Kind::Gauge, |_| {}), "", "no sample, no header");
    }

    #[test]
    fn histograms_have_cumulative_buckets_a_sum_and_a_count() {
        let mut cumulative = [0u64; LATENCY_BUCKETS.len()];
        for (i, c) in cumulative.iter_mut().enumerate() {
            *c = i as u64;
        }
        let text = written(Kind::Histogram, |l| {
            l.histogram(&[("service", "s")], &cumulative, 20, 1.5);
        });
        assert!(text.contains("# TYPE rvs_x histogram\n"), "{text}");
        assert!(
            text.contains("rvs_x_bucket{service=\"s\",le=\"0.0001\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("rvs_x_bucket{service=\"s\",le=\"2.5\"} 13\n"),
            "{text}"
        );
        assert!(
            text.contains("rvs_x_bucket{service=\"s\",le=\"+Inf\"} 20\nrvs_x_sum{service=\"s\"} 1.5\nrvs_x_count{service=\"s\"} 20\n"),
            "{text}"
        );
    }
}
