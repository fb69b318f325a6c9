//! The `on` / `off` registry behind `Stage` and the broadcast client.

use std::cell::RefCell;

use js_sys::{Array, Function};
use wasm_bindgen::{JsCast, JsValue};

use super::convert::type_error;

/// Event name → callbacks, in registration order.
#[derive(Default)]
pub(crate) struct Listeners(RefCell<Vec<(String, Function)>>);

impl Listeners {
    /// `on(event, callback)`: both arguments come from JS and are checked.
    pub(crate) fn add(&self, event: JsValue, callback: JsValue) -> Result<(), JsValue> {
        let entry = args(event, callback)?;
        self.0.borrow_mut().push(entry);
        Ok(())
    }

    /// `off(event, callback)`: removes the first matching registration.
    pub(crate) fn remove(&self, event: JsValue, callback: JsValue) -> Result<(), JsValue> {
        let (event, callback) = args(event, callback)?;
        let mut listeners = self.0.borrow_mut();
        let callback = JsValue::from(callback);
        if let Some(i) = listeners.iter().position(|(e, f)| *e == event && JsValue::from(f) == callback) {
            listeners.remove(i);
        }
        Ok(())
    }

    /// Calls every listener of `event` with `args`. The list is copied first,
    /// so a listener may call `on`/`off`; one that throws is logged and the
    /// others still run.
    pub(crate) fn call(&self, event: &str, args: &Array) {
        let fns: Vec<Function> =
            self.0.borrow().iter().filter(|(e, _)| e == event).map(|(_, f)| f.clone()).collect();
        for f in fns {
            if let Err(e) = f.apply(&JsValue::UNDEFINED, args) {
                web_sys::console::error_2(&JsValue::from_str(&format!("stagecast: a {event} listener threw")), &e);
            }
        }
    }
}

fn args(event: JsValue, callback: JsValue) -> Result<(String, Function), JsValue> {
    let event = event.as_string().ok_or_else(|| type_error("event name must be a string"))?;
    let callback = callback.dyn_into::<Function>().map_err(|_| type_error("listener must be a function"))?;
    Ok((event, callback))
}
