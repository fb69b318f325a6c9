//! The chat WebSocket (token as subprotocol). Reports raw text frames and
//! how the socket ended; `core::chat` decides what they mean.

use super::defer;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{CloseEvent, Event, MessageEvent, WebSocket};

/// What the socket reports.
#[derive(Debug)]
pub enum ChatSocketEvent {
    Open,
    Text(String),
    /// `clean`: a close frame with code 1000 or a clean close (the official
    /// client's test, which works around Firefox reporting `wasClean` false).
    Closed {
        was_open: bool,
        clean: bool,
    },
}

type Handler = Rc<RefCell<dyn FnMut(ChatSocketEvent)>>;

/// One chat connection. Dropping it removes the handlers and closes the
/// socket (code 1000) without reporting `Closed`.
pub struct ChatSocket {
    ws: WebSocket,
    _on_open: Closure<dyn FnMut(Event)>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_close: Closure<dyn FnMut(CloseEvent)>,
}

fn dispatch(handler: &Handler, ev: ChatSocketEvent) {
    let handler = handler.clone();
    defer(move || {
        if let Ok(mut h) = handler.try_borrow_mut() {
            h(ev);
        }
    });
}

impl ChatSocket {
    /// Starts connecting to `url` with `token` as the subprotocol.
    pub fn connect(
        url: &str,
        token: &str,
        on_event: impl FnMut(ChatSocketEvent) + 'static,
    ) -> Result<Self, JsValue> {
        let ws = WebSocket::new_with_str(url, token)?;
        let handler: Handler = Rc::new(RefCell::new(on_event));
        let was_open = Rc::new(Cell::new(false));

        let (h, open) = (handler.clone(), was_open.clone());
        let on_open = Closure::<dyn FnMut(Event)>::new(move |_: Event| {
            open.set(true);
            dispatch(&h, ChatSocketEvent::Open);
        });
        let h = handler.clone();
        let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
            // Binary frames are not part of the protocol.
            if let Some(text) = e.data().as_string() {
                dispatch(&h, ChatSocketEvent::Text(text));
            }
        });
        let h = handler;
        let on_close = Closure::<dyn FnMut(CloseEvent)>::new(move |e: CloseEvent| {
            dispatch(
                &h,
                ChatSocketEvent::Closed {
                    was_open: was_open.get(),
                    clean: e.was_clean() || e.code() == 1000,
                },
            );
        });
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        Ok(ChatSocket {
            ws,
            _on_open: on_open,
            _on_message: on_message,
            _on_close: on_close,
        })
    }

    /// Sends a text frame; `false` when the socket is not open.
    pub fn send(&self, text: &str) -> bool {
        self.ws.ready_state() == WebSocket::OPEN && self.ws.send_with_str(text).is_ok()
    }
}

impl Drop for ChatSocket {
    fn drop(&mut self) {
        self.ws.set_onopen(None);
        self.ws.set_onmessage(None);
        self.ws.set_onclose(None);
        let _ = self.ws.close_with_code(1000);
    }
}
