use super::config::parse_endpoint;

#[test]
fn endpoint_must_be_http_url() {
    assert!(parse_endpoint("https://api.axiom.co/v1/traces").is_ok());
    assert!(parse_endpoint("api.axiom.co/v1/traces").unwrap_err().contains("not a URL"));
    assert!(parse_endpoint("ftp://x/v1/traces").unwrap_err().contains("http://"));
}
