//! The opcode of every frame, and the ranges that say which kind of frame an opcode is.
//!
//! Requests are 0x01–0x3F, responses 0x80–0xBF (a response's opcode is its request's with
//! the high bit set), events 0xC0–0xFE and the error frame 0xFF. Numbers are never reused.

use std::ops::RangeInclusive;

pub const REQUESTS: RangeInclusive<u8> = 0x01..=0x3F;
pub const RESPONSES: RangeInclusive<u8> = 0x80..=0xBF;
pub const EVENTS: RangeInclusive<u8> = 0xC0..=0xFE;

pub const PING: u8 = 0x01;
pub const CREATE_ACCOUNT: u8 = 0x02;
pub const LOGIN: u8 = 0x03;
pub const LOGOUT: u8 = 0x04;
pub const DELETE_ACCOUNT: u8 = 0x05;
pub const LIST_ACCOUNTS: u8 = 0x06;
pub const SEND: u8 = 0x07;
pub const FETCH_UNREAD: u8 = 0x08;
pub const MARK_READ: u8 = 0x09;
pub const HISTORY: u8 = 0x0A;
pub const DELETE_MESSAGES: u8 = 0x0B;
pub const SUBSCRIBE: u8 = 0x0C;

pub const PONG: u8 = 0x81;
pub const ACCOUNT_CREATED: u8 = 0x82;
pub const LOGGED_IN: u8 = 0x83;
pub const LOGGED_OUT: u8 = 0x84;
pub const ACCOUNT_DELETED: u8 = 0x85;
pub const ACCOUNTS: u8 = 0x86;
pub const SENT: u8 = 0x87;
pub const MESSAGES: u8 = 0x88;
pub const MARKED_READ: u8 = 0x89;
pub const HISTORY_PAGE: u8 = 0x8A;
pub const MESSAGES_DELETED: u8 = 0x8B;
pub const SUBSCRIBED: u8 = 0x8C;

pub const EVENT_MESSAGE: u8 = 0xC1;
pub const EVENT_RECEIPT: u8 = 0xC2;
pub const EVENT_SESSION_ENDED: u8 = 0xC3;

pub const ERROR: u8 = 0xFF;

/// Every opcode of protocol version 1, for documentation and exhaustive tests.
pub const ALL: [u8; 28] = [
    PING,
    CREATE_ACCOUNT,
    LOGIN,
    LOGOUT,
    DELETE_ACCOUNT,
    LIST_ACCOUNTS,
    SEND,
    FETCH_UNREAD,
    MARK_READ,
    HISTORY,
    DELETE_MESSAGES,
    SUBSCRIBE,
    PONG,
    ACCOUNT_CREATED,
    LOGGED_IN,
    LOGGED_OUT,
    ACCOUNT_DELETED,
    ACCOUNTS,
    SENT,
    MESSAGES,
    MARKED_READ,
    HISTORY_PAGE,
    MESSAGES_DELETED,
    SUBSCRIBED,
    EVENT_MESSAGE,
    EVENT_RECEIPT,
    EVENT_SESSION_ENDED,
    ERROR,
];
