//! The bodies of event frames (pushed by the server), mapped to [`corvid_core::Event`].

use corvid_core::{EndReason, Event};

use crate::opcode;
use crate::primitive::{FieldError, ReadResult, Reader, WriteResult, Writer};

pub(crate) fn opcode(event: &Event) -> u8 {
    match event {
        Event::Message(_) => opcode::EVENT_MESSAGE,
        Event::Receipt { .. } => opcode::EVENT_RECEIPT,
        Event::SessionEnded { .. } => opcode::EVENT_SESSION_ENDED,
    }
}

pub(crate) fn write(w: &mut Writer<'_>, event: &Event) -> WriteResult {
    match event {
        Event::Message(message) => w.message(message)?,
        Event::Receipt { id, status } => {
            w.u64(id.0);
            w.u8(*status as u8);
        }
        Event::SessionEnded { reason } => w.u8(*reason as u8),
    }
    Ok(())
}

pub(crate) fn read(opcode: u8, r: &mut Reader<'_>) -> ReadResult<Event> {
    let event = match opcode {
        opcode::EVENT_MESSAGE => Event::Message(r.message()?),
        opcode::EVENT_RECEIPT => Event::Receipt {
            id: r.message_id("id")?,
            status: r.receipt_status("status")?,
        },
        opcode::EVENT_SESSION_ENDED => {
            let value = r.u8("reason")?;
            let reason = EndReason::from_u8(value).ok_or(FieldError::BadEnum {
                field: "reason",
                value: value.into(),
            })?;
            Event::SessionEnded { reason }
        }
        unknown => return Err(FieldError::UnknownOpcode(unknown)),
    };
    Ok(event)
}
