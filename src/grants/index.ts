export * from './types.js'
export { createMemoryGrantStore } from './memory-store.js'
export { createRedisGrantStore } from './redis-store.js'
