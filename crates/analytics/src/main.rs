//! `hookbus-analytics`: analytics as its own process.

hookbus_service::service_binary!(hookbus_analytics::service_main);
