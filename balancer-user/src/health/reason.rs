//! Failures as a health check's reason reads them: short, lower case, with
//! the address, without the "(os error N)" that std appends.

use std::{io, net::SocketAddr};

/// A failed connect to `addr`.
pub fn connect_error(addr: SocketAddr, e: &io::Error) -> String {
    format!("connect to {addr}: {}", describe_io(e))
}

/// An I/O error as a reason reads best: "connection refused", without the
/// "(os error 111)" that std appends.
pub fn describe_io(e: &io::Error) -> String {
    let text = e.to_string();
    let text = match text.find(" (os error ") {
        Some(end) => &text[..end],
        None => &text,
    };
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors_read_as_reasons() {
        let refused = io::Error::from_raw_os_error(libc::ECONNREFUSED);
        assert_eq!(describe_io(&refused), "connection refused");
        assert_eq!(
            connect_error("203.0.113.11:8080".parse().unwrap(), &refused),
            "connect to 203.0.113.11:8080: connection refused"
        );
        let custom = io::Error::other("Odd thing");
        assert_eq!(describe_io(&custom), "odd thing");
    }
}
