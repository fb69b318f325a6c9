//! The stage event-plane WebSocket (token as subprotocol).

use super::defer;
use crate::core::wire::{client_message_json, parse_server_message};
use stagecast_protocol::events::{ClientMessage, ServerMessage};
use std::cell::RefCell;
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{CloseEvent, Event, MessageEvent, WebSocket};

/// What the socket reports, as Rust values.
#[derive(Debug)]
pub enum SocketEvent {
    Open,
    Message(ServerMessage),
    /// A frame that is not a known server message (ignored by the stage).
    Unparsable,
    /// The socket closed. `was_open` is false when the handshake failed
    /// (the server refused the token with an HTTP error).
    Closed {
        was_open: bool,
    },
}

type Handler = Rc<RefCell<dyn FnMut(SocketEvent)>>;

/// An open (or opening) event-plane connection. Dropping it removes the
/// handlers and closes the socket without reporting `Closed`, as a drop
/// (close code 4000: the participant stays for the server's reconnect
/// grace); [`EventSocket::close`] with `deliberate` is the leave (1000).
pub struct EventSocket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

fn dispatch(handler: &Handler, ev: SocketEvent) {
    let handler = handler.clone();
    defer(move || {
        if let Ok(mut h) = handler.try_borrow_mut() {
            h(ev);
        }
    });
}

impl EventSocket {
    /// Starts connecting; events arrive through `on_event`.
    pub fn connect(
        url: &str,
        token: &str,
        on_event: impl FnMut(SocketEvent) + 'static,
    ) -> Result<Self, JsValue> {
        let ws = WebSocket::new_with_str(url, token)?;
        let handler: Handler = Rc::new(RefCell::new(on_event));
        let was_open = Rc::new(std::cell::Cell::new(false));

        let (h, open) = (handler.clone(), was_open.clone());
        let on_open = Closure::<dyn FnMut(Event)>::new(move |_: Event| {
            open.set(true);
            dispatch(&h, SocketEvent::Open);
        });
        let h = handler.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            let ev = match e.data().as_string().and_then(|t| parse_server_message(&t)) {
                Some(m) => SocketEvent::Message(m),
                None => SocketEvent::Unparsable,
            };
            dispatch(&h, ev);
        });
        let h = handler;
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |_: CloseEvent| {
            dispatch(
                &h,
                SocketEvent::Closed {
                    was_open: was_open.get(),
                },
            );
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(EventSocket {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        })
    }

    /// Sends a client message; silently dropped if the socket is not open
    /// (the next snapshot after a reconnect resynchronises).
    pub fn send(&self, msg: &ClientMessage) {
        if self.ws.ready_state() != WebSocket::OPEN {
            return;
        }
        let _ = self.ws.send_with_str(&client_message_json(msg));
    }
}

/// Close code of a deliberate leave: the server ends the participant at
/// once. Any other close (4000 here, or none when the network dropped) is a
/// drop the server waits out for its reconnect grace period.
const LEAVING: (u16, &str) = (1000, "user-initiated");
const DROPPING: (u16, &str) = (4000, "reconnecting");

impl EventSocket {
    /// Closes the socket: `deliberate` for a leave, otherwise a drop (the
    /// SDK gave up on it and reconnects).
    pub fn close(self, deliberate: bool) {
        let (code, reason) = if deliberate { LEAVING } else { DROPPING };
        self.detach();
        let _ = self.ws.close_with_code_and_reason(code, reason);
    }

    fn detach(&self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
    }
}

impl Drop for EventSocket {
    fn drop(&mut self) {
        self.detach();
        // A no-op after `close()`; otherwise (the Stage was freed) a drop.
        let _ = self.ws.close_with_code_and_reason(DROPPING.0, DROPPING.1);
    }
}
