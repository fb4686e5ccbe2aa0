//! The crate's errors: [`Error`], the decode errors of the wire format with their NOTIFICATION
//! codes ([`DecodeError`]) and the RFC 7606 actions ([`Action`]).

use std::net::Ipv4Addr;

use crate::wire::Notification;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes that are not a valid BGP message.
    #[error("cannot decode BGP message: {source}")]
    Decode {
        /// What was wrong, with its NOTIFICATION code.
        #[source]
        source: DecodeError,
    },
    /// A value that cannot be put on the wire.
    #[error("cannot encode BGP message: {source}")]
    Encode {
        /// What was too long.
        #[source]
        source: EncodeError,
    },
    /// A configuration value that is not acceptable.
    #[error("invalid {what} {value:?}: {reason}")]
    Config {
        /// Which setting.
        what: &'static str,
        /// The offending value as given.
        value: String,
        /// Why it is refused.
        reason: String,
    },
    /// An I/O operation of the speaker failed.
    #[error("{what}: {source}")]
    Io {
        /// What the speaker was doing.
        what: String,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The speaker task has stopped; commands cannot be delivered any more.
    #[error("the BGP speaker has shut down")]
    Closed,
}

/// What RFC 7606 says to do with a malformed UPDATE attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Send the NOTIFICATION and reset the session (RFC 4271 behaviour).
    SessionReset,
    /// Treat every route of the UPDATE as withdrawn and keep the session.
    TreatAsWithdraw,
    /// Drop the malformed attribute and keep the rest of the UPDATE.
    AttributeDiscard,
}

impl Action {
    /// The name used in JSON output: `session-reset`, `treat-as-withdraw`, `attribute-discard`.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::SessionReset => "session-reset",
            Action::TreatAsWithdraw => "treat-as-withdraw",
            Action::AttributeDiscard => "attribute-discard",
        }
    }
}

/// A message that cannot be encoded within the limits of the wire format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A field holds more bytes than its length field can express, or the message exceeds the
    /// maximum message size.
    #[error("{what} is {length} bytes, more than the maximum {max}")]
    TooLong {
        /// Which field or message.
        what: &'static str,
        /// Its length.
        length: usize,
        /// The most the format allows.
        max: usize,
    },
    /// The output buffer is shorter than [`crate::wire::Message::buffer_len`].
    #[error("output buffer of {available} bytes, {needed} needed")]
    BufferTooShort {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
    /// A value the format cannot express at all (for example an empty COMMUNITIES list).
    #[error("{what} cannot be encoded: {reason}")]
    Invalid {
        /// Which field.
        what: &'static str,
        /// Why.
        reason: &'static str,
    },
}

/// Why bytes are not a valid BGP message. Every variant maps to the NOTIFICATION that RFC 4271
/// §6 (and RFC 5492, RFC 7313) prescribe, see [`DecodeError::notification`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Fewer bytes than the message needs (a truncated message).
    #[error("incomplete message: {needed} bytes needed, {available} available")]
    Incomplete {
        /// Bytes needed.
        needed: usize,
        /// Bytes given.
        available: usize,
    },
    /// The marker is not sixteen 0xff bytes.
    #[error("header marker is not all ones")]
    NotSynchronized,
    /// The header's length field is out of range for the message type (or the input).
    #[error("bad message length {length}")]
    BadLength {
        /// The length field.
        length: u16,
    },
    /// Unknown message type.
    #[error("bad message type {kind}")]
    BadType {
        /// The type octet.
        kind: u8,
    },
    /// OPEN with a version other than 4.
    #[error("unsupported BGP version {version}")]
    UnsupportedVersion {
        /// The version octet.
        version: u8,
    },
    /// OPEN from an AS other than the configured one.
    #[error("bad peer AS {asn}, expected {expected}")]
    BadPeerAs {
        /// The AS the peer claims.
        asn: u32,
        /// The AS configured for the neighbor.
        expected: u32,
    },
    /// OPEN with an unacceptable BGP identifier (zero, or our own).
    #[error("bad BGP identifier {id}")]
    BadIdentifier {
        /// The identifier.
        id: Ipv4Addr,
    },
    /// OPEN with an optional parameter other than capabilities.
    #[error("unsupported optional parameter type {kind}")]
    UnsupportedParameter {
        /// The parameter type.
        kind: u8,
    },
    /// OPEN with a hold time of 1 or 2 seconds.
    #[error("unacceptable hold time {hold_time}")]
    UnacceptableHoldTime {
        /// The proposed hold time.
        hold_time: u16,
    },
    /// OPEN whose optional parameters or capabilities do not parse.
    #[error("malformed OPEN: {what} at offset {offset}")]
    MalformedOpen {
        /// What was wrong.
        what: &'static str,
        /// Byte offset in the message.
        offset: usize,
    },
    /// UPDATE whose lengths do not add up.
    #[error("malformed attribute list: {what} at offset {offset}")]
    MalformedAttributeList {
        /// What was wrong.
        what: &'static str,
        /// Byte offset in the message.
        offset: usize,
    },
    /// A well-known attribute this speaker does not know.
    #[error("unrecognized well-known attribute {code}")]
    UnrecognizedWellKnown {
        /// Attribute type code.
        code: u8,
    },
    /// A mandatory well-known attribute is missing.
    #[error("missing well-known attribute {code}")]
    MissingWellKnown {
        /// Attribute type code.
        code: u8,
    },
    /// Attribute flags that conflict with the attribute type.
    #[error("attribute {code} has wrong flags {flags:#04x}")]
    AttributeFlags {
        /// Attribute type code.
        code: u8,
        /// The flags octet.
        flags: u8,
    },
    /// Attribute length wrong for its type.
    #[error("attribute {code} has wrong length {length}")]
    AttributeLength {
        /// Attribute type code.
        code: u8,
        /// The length field.
        length: u16,
    },
    /// ORIGIN other than 0, 1, 2.
    #[error("invalid ORIGIN {value}")]
    InvalidOrigin {
        /// The value.
        value: u8,
    },
    /// NEXT_HOP that cannot be a next hop.
    #[error("invalid NEXT_HOP {address}")]
    InvalidNextHop {
        /// The address.
        address: Ipv4Addr,
    },
    /// An optional attribute whose contents do not parse.
    #[error("optional attribute {code} malformed: {what}")]
    OptionalAttribute {
        /// Attribute type code.
        code: u8,
        /// What was wrong.
        what: &'static str,
    },
    /// A prefix that does not parse (length too large or overrun).
    #[error("invalid network field: {what} at offset {offset}")]
    InvalidNetworkField {
        /// What was wrong.
        what: &'static str,
        /// Byte offset in the message.
        offset: usize,
    },
    /// AS_PATH segments that do not parse.
    #[error("malformed AS_PATH: {what}")]
    MalformedAsPath {
        /// What was wrong.
        what: &'static str,
    },
    /// ROUTE-REFRESH of the wrong length.
    #[error("bad ROUTE-REFRESH length {length}")]
    BadRouteRefreshLength {
        /// The length field.
        length: u16,
    },
}

impl DecodeError {
    /// The NOTIFICATION code and subcode of RFC 4271 §6 for this error.
    pub fn code(&self) -> (u8, u8) {
        use DecodeError::*;
        match self {
            Incomplete { .. } | BadLength { .. } => (1, 2),
            NotSynchronized => (1, 1),
            BadType { .. } => (1, 3),
            UnsupportedVersion { .. } => (2, 1),
            BadPeerAs { .. } => (2, 2),
            BadIdentifier { .. } => (2, 3),
            UnsupportedParameter { .. } => (2, 4),
            UnacceptableHoldTime { .. } => (2, 6),
            MalformedOpen { .. } => (2, 0),
            MalformedAttributeList { .. } => (3, 1),
            UnrecognizedWellKnown { .. } => (3, 2),
            MissingWellKnown { .. } => (3, 3),
            AttributeFlags { .. } => (3, 4),
            AttributeLength { .. } => (3, 5),
            InvalidOrigin { .. } => (3, 6),
            InvalidNextHop { .. } => (3, 8),
            OptionalAttribute { .. } => (3, 9),
            InvalidNetworkField { .. } => (3, 10),
            MalformedAsPath { .. } => (3, 11),
            BadRouteRefreshLength { .. } => (7, 1),
        }
    }

    /// The NOTIFICATION to send for this error, with the data field RFC 4271 §6 asks for where
    /// this error carries it.
    pub fn notification(&self) -> Notification {
        let (code, subcode) = self.code();
        let data = match *self {
            DecodeError::BadLength { length } | DecodeError::BadRouteRefreshLength { length } => {
                length.to_be_bytes().to_vec()
            }
            DecodeError::BadType { kind } => vec![kind],
            DecodeError::UnsupportedVersion { .. } => 4u16.to_be_bytes().to_vec(),
            DecodeError::MissingWellKnown { code } => vec![code],
            _ => Vec::new(),
        };
        Notification {
            code,
            subcode,
            data,
        }
    }
}
