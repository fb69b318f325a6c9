//! The compositor's frame clock. Timers and `requestAnimationFrame` on the
//! page are throttled (to 1 Hz or less) when the tab is hidden, which would
//! freeze the broadcast; timers in a dedicated Worker are not, and the
//! page still receives its messages. So a tiny Worker (from a Blob URL)
//! posts a tick every frame period, self-correcting for drift. If Workers
//! are unavailable, a page `setInterval` is the fallback.

use super::timer::Interval;
use wasm_bindgen::closure::Closure;
use wasm_bindgen::{JsCast, JsValue};
use web_sys::{Blob, BlobPropertyBag, MessageEvent, Url, Worker};

/// The Worker's source: `postMessage(period_ms)` starts (or re-times) the
/// ticks, `0` stops them.
const WORKER_JS: &str = "let t,n;onmessage=e=>{clearTimeout(t);const p=+e.data;if(!(p>0))return;\
n=performance.now()+p;const f=()=>{postMessage(0);n+=p;const now=performance.now();\
if(n<now-p)n=now+p;t=setTimeout(f,Math.max(0,n-now))};t=setTimeout(f,p)}";

enum Driver {
    Worker {
        worker: Worker,
        url: String,
        _on_message: Closure<dyn FnMut(MessageEvent)>,
    },
    /// Kept for its `Drop` (clears the interval).
    Page(#[allow(dead_code)] Interval),
}

/// Calls `tick` every `period_ms` until dropped.
pub struct FrameClock {
    driver: Driver,
}

impl FrameClock {
    pub fn start(period_ms: f64, tick: impl Fn() + 'static) -> FrameClock {
        let tick = std::rc::Rc::new(tick);
        let t = tick.clone();
        match spawn_worker(period_ms, move || t()) {
            Ok(driver) => FrameClock { driver },
            Err(_) => FrameClock {
                driver: Driver::Page(Interval::new(
                    period_ms.round().max(1.0) as u32,
                    move || tick(),
                )),
            },
        }
    }

    /// Whether ticks come from a Worker (not throttled in background tabs).
    pub fn is_worker(&self) -> bool {
        matches!(self.driver, Driver::Worker { .. })
    }
}

fn spawn_worker(period_ms: f64, tick: impl Fn() + 'static) -> Result<Driver, JsValue> {
    let parts = js_sys::Array::of1(&JsValue::from_str(WORKER_JS));
    let opts = BlobPropertyBag::new();
    opts.set_type("text/javascript");
    let blob = Blob::new_with_str_sequence_and_options(&parts, &opts)?;
    let url = Url::create_object_url_with_blob(&blob)?;
    let worker = match Worker::new(&url) {
        Ok(w) => w,
        Err(e) => {
            let _ = Url::revoke_object_url(&url);
            return Err(e);
        }
    };
    // Called directly (not deferred): the compositor holds no borrow
    // across ticks, and deferring would add a microtask per frame.
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(move |_: MessageEvent| tick());
    worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    worker.post_message(&JsValue::from_f64(period_ms))?;
    Ok(Driver::Worker {
        worker,
        url,
        _on_message: on_message,
    })
}

impl Drop for FrameClock {
    fn drop(&mut self) {
        if let Driver::Worker { worker, url, .. } = &self.driver {
            worker.set_onmessage(None);
            worker.terminate();
            let _ = Url::revoke_object_url(url);
        }
    }
}
