/**
 * The workflow events a webhook can subscribe to (`notifications.webhooks[].events`): a module of
 * its own so the config schema can name them without loading the notifier.
 */
export const NOTIFICATION_EVENTS = [
  'request.created',
  'request.escalated',
  'request.approved',
  'request.denied',
  'request.expired',
  'breakglass.used',
] as const

export type NotificationEvent = (typeof NOTIFICATION_EVENTS)[number]
