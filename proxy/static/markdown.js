// A small markdown renderer that builds DOM nodes and never parses HTML: model output is text,
// and text is only ever assigned through textContent, so nothing in it can become markup.
// Supported: fenced code blocks, inline code, **bold**, *italic*, headings, bullet and numbered
// lists, paragraphs, and http(s) links (other schemes stay plain text).
"use strict";

(function () {
  const INLINE = /(`[^`\n]+`)|(\*\*[^*\n]+\*\*)|(\*[^*\n]+\*)|(\[[^\]\n]+\]\(https?:\/\/[^\s)]+\))/;

  function appendInline(parent, text) {
    let rest = text;
    while (rest.length > 0) {
      const match = INLINE.exec(rest);
      if (!match) {
        parent.appendChild(document.createTextNode(rest));
        return;
      }
      if (match.index > 0) {
        parent.appendChild(document.createTextNode(rest.slice(0, match.index)));
      }
      const token = match[0];
      let node;
      if (match[1]) {
        node = document.createElement("code");
        node.textContent = token.slice(1, -1);
      } else if (match[2]) {
        node = document.createElement("strong");
        node.textContent = token.slice(2, -2);
      } else if (match[3]) {
        node = document.createElement("em");
        node.textContent = token.slice(1, -1);
      } else {
        const close = token.indexOf("](");
        node = document.createElement("a");
        node.textContent = token.slice(1, close);
        node.href = token.slice(close + 2, -1);
        node.rel = "noopener noreferrer nofollow";
        node.target = "_blank";
      }
      parent.appendChild(node);
      rest = rest.slice(match.index + token.length);
    }
  }

  function render(source) {
    const root = document.createDocumentFragment();
    const lines = source.split("\n");
    let i = 0;
    let paragraph = [];
    const flush = () => {
      if (paragraph.length) {
        const p = document.createElement("p");
        appendInline(p, paragraph.join(" "));
        root.appendChild(p);
        paragraph = [];
      }
    };
    while (i < lines.length) {
      const line = lines[i];
      const fence = /^```\s*([\w+-]*)\s*$/.exec(line);
      if (fence) {
        flush();
        const body = [];
        i += 1;
        while (i < lines.length && !/^```\s*$/.test(lines[i])) {
          body.push(lines[i]);
          i += 1;
        }
        i += 1; // closing fence (or end of a still-streaming block)
        const pre = document.createElement("pre");
        const code = document.createElement("code");
        if (fence[1]) code.dataset.lang = fence[1];
        code.textContent = body.join("\n");
        pre.appendChild(code);
        root.appendChild(pre);
        continue;
      }
      const heading = /^(#{1,4})\s+(.*)$/.exec(line);
      const bullet = /^\s*[-*]\s+(.*)$/.exec(line);
      const numbered = /^\s*\d+[.)]\s+(.*)$/.exec(line);
      if (heading) {
        flush();
        const h = document.createElement("h" + Math.min(6, heading[1].length + 2));
        appendInline(h, heading[2]);
        root.appendChild(h);
      } else if (bullet || numbered) {
        flush();
        const list = document.createElement(bullet ? "ul" : "ol");
        while (i < lines.length) {
          const item = (bullet ? /^\s*[-*]\s+(.*)$/ : /^\s*\d+[.)]\s+(.*)$/).exec(lines[i]);
          if (!item) break;
          const li = document.createElement("li");
          appendInline(li, item[1]);
          list.appendChild(li);
          i += 1;
        }
        root.appendChild(list);
        continue;
      } else if (line.trim() === "") {
        flush();
      } else {
        paragraph.push(line);
      }
      i += 1;
    }
    flush();
    return root;
  }

  window.renderMarkdown = render;
})();
