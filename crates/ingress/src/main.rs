//! `hookbus-ingress`: the ingress as its own process. Configured by `--config <file>` or
//! `HOOKBUS_CONFIG`, and the environment.

hookbus_service::service_binary!(hookbus_ingress::service_main);
