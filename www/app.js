// Stagecast sample app: pick a profile, list/create stages, join from an
// invite link, and talk on a stage. It uses the `stagecast` package exactly
// as any app would (see the import map in index.html) and the demo backend
// (/api/*) that mirrors the IVS multi-host sample backend.
//
// One module per screen under app/: home.js (stage list), invite.js,
// stage.js (with broadcast.js and chat.js panels); router.js picks the
// screen from the URL.

import { renderHome, stopStageList } from './app/home.js';
import { renderInvite } from './app/invite.js';
import { startRouter } from './app/router.js';
import { enterStage } from './app/stage.js';

startRouter({
  home: renderHome,
  invite(groupId, nav) {
    stopStageList();
    renderInvite(groupId, nav);
  },
  stage(session, nav) {
    stopStageList();
    enterStage(session, nav);
  },
});
