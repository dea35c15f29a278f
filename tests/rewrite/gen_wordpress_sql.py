B = "https://www.example.com/wp-content/uploads/"
def s(x):
    return 's:%d:"%s";' % (len(x.encode()), x)
def arr(items):
    out = "a:%d:{" % len(items)
    for k, v in items:
        out += (("i:%d;" % k) if isinstance(k, int) else s(k)) + v
    return out + "}"
def esc(x):
    return x.replace("\\", "\\\\").replace("'", "\\'").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r")
meta = arr([("width", "i:1024;"), ("height", "i:683;"), ("file", s("2019/05/cat.jpg")),
            ("sizes", arr([("medium", arr([("file", s("cat-300x200.jpg")), ("width", "i:300;"), ("height", "i:200;"), ("mime-type", s("image/jpeg"))]))])),
            ("image_meta", arr([("caption", s("Ünïcode café")), ("credit", s(""))]))])
widget = arr([(2, arr([("title", s("Our cat")), ("text", s('<p>Hello</p>\n<img src="%s2019/05/cat.jpg" alt="cat" srcset="%s2019/05/cat-300x200.jpg 300w, %s2019/05/cat-1024x683.jpg 1024w">' % (B, B, B))), ("filter", "b:1;"), ("visual", "b:1;")])), ("_multiwidget", "i:1;")])
inner = arr([("url", s(B + "2020/01/header.png")), ("thumbnail_url", s(B + "2020/01/header.png")), ("width", "i:1600;")])
theme = arr([("header_image", s(B + "2020/01/header.png")), ("header_image_data", s(inner)), ("custom_css_post_id", "i:-1;")])
elementor = '[{"id":"1a","elType":"widget","settings":{"image":{"url":"%s","id":7}}}]' % (B + "2020/01/header.png").replace("/", "\\/")
post = '<!-- wp:image {"id":7} -->\n<figure><img src="%s2019/05/cat.jpg" srcset="%s2019/05/cat-300x200.jpg 300w, %s2019/05/cat-1024x683.jpg 1024w" /></figure>\n<!-- /wp:image -->\n<p>Old: <a href="%s2018/old/unknown.gif">gif</a></p>' % (B, B, B, B)
print("-- MySQL dump 10.13  Distrib 8.0.36, for Linux (x86_64)")
print("--\n-- Host: localhost    Database: wordpress\n-- ------------------------------------------------------")
print("/*!40101 SET NAMES utf8mb4 */;")
print("LOCK TABLES `wp_options` WRITE;")
print("INSERT INTO `wp_options` VALUES (101,'widget_text','%s','yes'),(102,'theme_mods_twentytwenty','%s','yes');" % (esc(widget), esc(theme)))
print("UNLOCK TABLES;")
print("INSERT INTO `wp_postmeta` VALUES (11,7,'_wp_attachment_metadata','%s'),(12,9,'_elementor_data','%s');" % (esc(meta), esc(elementor)))
print("INSERT INTO `wp_posts` VALUES (9,1,'2019-05-01 10:00:00','%s','Cats','publish');" % esc(post))
