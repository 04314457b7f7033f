//! Adapters on the domain's ports: payment channels (the HTTP protocol client, the simulator
//! in process and as a server) and notice providers (SMS gateways, SMTP). They depend on the
//! domain only; `app` wires them into the engine.

pub mod channel;
pub mod providers;
