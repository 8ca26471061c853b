//! `hookbus-inventory`: the inventory as its own process.

hookbus_service::service_binary!(hookbus_inventory::service_main);
