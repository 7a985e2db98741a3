// Every page but /signin needs a signed-in user; one who waits for admission sees /waitlist.
export default defineNuxtRouteMiddleware(async (to) => {
  let me
  try {
    me = await loadMe()
  }
  catch {
    return // the page shows the API's error itself
  }
  if (!me) {
    if (to.path !== '/signin') return navigateTo('/signin')
    return
  }
  if (!me.admitted && to.path !== '/waitlist') return navigateTo('/waitlist')
  if (me.admitted && (to.path === '/waitlist' || to.path === '/signin')) return navigateTo('/')
})
