//! Canonical JSON text of numbers and booleans: what they show as in a column widened to Utf8.

pub fn bool_text(value: bool) -> &'static str {
    if value {
        "true"
    } else {
        "false"
    }
}

/// Integers at or below 2^53 exactly.
const FLOAT_EXACT_INTEGER_MAX: f64 = 9_007_199_254_740_992.0;

/// Canonical JSON text of a float. An integral value that a float holds exactly is written
/// without a fraction (`5`, not `5.0`), so an Int64 column that widened to Float64 and then to
/// Utf8 shows the same text whichever way round the conversions ran (row or batch). Others get
/// the shortest text that reads back as the same float.
pub fn float_text(value: f64) -> String {
    debug_assert!(value.is_finite(), "JSON has no NaN or infinity");
    if value.fract() == 0.0 && value.abs() <= FLOAT_EXACT_INTEGER_MAX {
        return (value as i64).to_string();
    }
    match serde_json::Number::from_f64(value) {
        Some(number) => number.to_string(),
        None => value.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn float_text_is_canonical() {
        assert_eq!(float_text(5.0), "5");
        assert_eq!(float_text(-0.0), "0");
        assert_eq!(float_text(1.5), "1.5");
        assert_eq!(float_text(0.1), "0.1");
        assert_eq!(float_text(-2.25), "-2.25");
        assert_eq!(float_text(9_007_199_254_740_992.0), "9007199254740992");
        assert_eq!(float_text(1e300).parse::<f64>().unwrap(), 1e300);
        assert_eq!(float_text(1.0e-7).parse::<f64>().unwrap(), 1.0e-7);
    }
}
