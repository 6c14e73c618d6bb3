//! The host CPU as snapshots record it: model name and feature flags from `/proc/cpuinfo`.

/// Model name and sorted, deduplicated feature flags of the first CPU in `/proc/cpuinfo` (empty
/// when it cannot be read).
pub fn describe() -> (String, Vec<String>) {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|text| parse(&text))
        .unwrap_or_default()
}

fn parse(cpuinfo: &str) -> (String, Vec<String>) {
    let first = cpuinfo.split("\n\n").next().unwrap_or_default();
    let mut model = String::new();
    let mut flags = Vec::new();
    for line in first.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key.trim() {
            "model name" => model = value.trim().to_string(),
            "flags" => flags = value.split_whitespace().map(str::to_owned).collect(),
            _ => {}
        }
    }
    flags.sort();
    flags.dedup();
    (model, flags)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_first_cpu() {
        let text = "processor\t: 0\nmodel name\t: AMD EPYC 9454\nflags\t\t: sse2 avx fpu avx\n\n\
                    processor\t: 1\nmodel name\t: other\nflags\t: x\n";
        let (model, flags) = parse(text);
        assert_eq!(model, "AMD EPYC 9454");
        assert_eq!(flags, ["avx", "fpu", "sse2"]);
        assert_eq!(parse(""), (String::new(), Vec::new()));
    }
}
