//! `hookbus-notifications`: notifications as its own process.

hookbus_service::service_binary!(hookbus_notifications::service_main);
