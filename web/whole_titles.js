// The pack's nodes show their whole title when added to the canvas.
//
// LiteGraph sizes a node to its title with 40 px of padding (LGraphNode.computeSize) but draws
// the title in the node's width less two title heights, 60 px (drawTitleText). A node whose
// title decides its width, as the probe's does, so showed "TACA Attention Balance ..." in
// frontends 1.27 and 1.49. This widens the pack's nodes to fit their titles; nothing else.
import { app } from "../../scripts/app.js";

const NODES = new Set(["TACA", "TACAAdvanced", "TACALoraLoader", "TACABalanceProbe", "TACABalancePlot"]);
const measure = document.createElement("canvas").getContext("2d");

app.registerExtension({
  name: "comfyui-taca.whole-titles",
  beforeRegisterNodeDef(nodeType, nodeData) {
    if (!NODES.has(nodeData.name)) return;
    const computeSize = nodeType.prototype.computeSize;
    nodeType.prototype.computeSize = function (out) {
      const size = computeSize.call(this, out);
      measure.font = this.titleFontStyle;
      const titled = measure.measureText(this.title ?? "").width + 2 * window.LiteGraph.NODE_TITLE_HEIGHT + 4;
      size[0] = Math.max(size[0], Math.ceil(titled));
      return size;
    };
  },
});
