"""Webhooks: endpoints a tenant subscribes, the delivery of events to them, and the bot's own
status reports relayed as events. See "Events and webhooks" in the README."""
