# jitgate: multi-stage build; the runtime image holds production dependencies and compiled JS only,
# and runs as a non-root user.
FROM node:20-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npx tsc -p tsconfig.json && npm prune --omit=dev

FROM node:20-bookworm-slim
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY config ./config
COPY policies ./policies
# Writable state (a generated dev key, if no signing key is mounted) lives in /data.
RUN mkdir -p /data && chown node:node /data
USER node
ENV JITGATE_DATA_DIR=/data
EXPOSE 8080 8081
# The control plane binds loopback by default; in a container, expose it only with an admin token:
#   -e JITGATE_CONTROL_LISTEN=0.0.0.0:8081 -e JITGATE_ADMIN_TOKEN=...
ENTRYPOINT ["node", "bin/jitgate.js"]
CMD ["serve"]
