// The dashboard: a static single-page app that talks only to the public API on its own origin
// (cookie session, no CORS). `npm run build` (nuxt generate: static preset) writes .output/public,
// which `zeitwork api` serves.
export default defineNuxtConfig({
  compatibilityDate: '2025-07-15',
  ssr: false,
  modules: ['@nuxt/ui'],
  css: ['~/assets/css/main.css'],
  devtools: { enabled: false },
  telemetry: false,
  app: {
    head: {
      title: 'Zeitwork',
      htmlAttrs: { lang: 'en' },
    },
  },
  // Offline build and no third-party requests at run time: no web fonts (system font stack),
  // icons bundled from @iconify-json/lucide instead of fetched from the Iconify API.
  ui: { fonts: false, colorMode: true },
  icon: {
    provider: 'none',
    clientBundle: { scan: true, sizeLimitKb: 256 },
    serverBundle: false,
    fallbackToApi: false,
  },
  // `nuxt dev` proxies the API so the cookie stays same-origin.
  vite: {
    server: {
      proxy: { '/v1': { target: process.env.ZEITWORK_API_URL || 'http://127.0.0.1:8080', changeOrigin: false } },
    },
  },
})
