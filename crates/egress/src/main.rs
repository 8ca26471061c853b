//! `hookbus-egress`: the egress as its own process.

hookbus_service::service_binary!(hookbus_egress::service_main);
